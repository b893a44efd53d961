/** Small typed DOM look-ups shared by the views. */

/**
 * The element with this id, checked to be of the expected class.
 * @template {HTMLElement} T
 * @param {string} id
 * @param {new (...args: any[]) => T} type
 * @returns {T}
 */
export function byId(id, type) {
  const el = document.getElementById(id);
  if (!(el instanceof type)) throw new Error(`#${id} is missing or not a ${type.name}`);
  return el;
}

/**
 * Attach a stream to a video element and start it; resolves false if the browser blocked playback.
 * @param {HTMLVideoElement} video
 * @param {MediaStream} stream
 */
export async function playStream(video, stream) {
  if (video.srcObject !== stream) video.srcObject = stream;
  try {
    await video.play();
    return true;
  } catch (err) {
    // AbortError only means a newer srcObject replaced this one.
    return !(err instanceof Error && err.name === 'NotAllowedError');
  }
}
