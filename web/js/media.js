/** The local camera and microphone: acquired once, muted by disabling tracks, with a microphone level. No DOM. */

/** @typedef {'media_denied' | 'no_device' | 'device_busy' | 'media_failed'} MediaErrorCode */

/** A getUserMedia failure, reduced to the few cases we explain to people. */
export class MediaError extends Error {
  /**
   * @param {MediaErrorCode} code
   * @param {unknown} [cause]
   */
  constructor(code, cause) {
    super(code, { cause });
    this.name = 'MediaError';
    this.code = code;
  }
}

/** Feature detection, never user-agent sniffing. */
export function isSupported() {
  return (
    typeof navigator.mediaDevices?.getUserMedia === 'function' &&
    typeof globalThis.RTCPeerConnection === 'function' &&
    typeof globalThis.WebSocket === 'function'
  );
}

/** @type {MediaStreamConstraints} */
const CONSTRAINTS = {
  audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  video: { width: { ideal: 640 }, height: { ideal: 480 }, facingMode: 'user' },
};

/**
 * @param {unknown} err
 * @returns {MediaErrorCode}
 */
export function mediaErrorCode(err) {
  const name = err instanceof Error || (typeof err === 'object' && err !== null && 'name' in err)
    ? String(/** @type {{name: unknown}} */ (err).name)
    : '';
  switch (name) {
    case 'NotAllowedError':
    case 'PermissionDeniedError':
    case 'SecurityError':
      return 'media_denied';
    case 'NotFoundError':
    case 'DevicesNotFoundError':
      return 'no_device';
    case 'NotReadableError':
    case 'TrackStartError':
    case 'AbortError':
      return 'device_busy';
    default:
      return 'media_failed';
  }
}

export class LocalMedia {
  /** @type {AudioContext | null} */
  #audioContext = null;
  /** @type {ReturnType<typeof setInterval> | undefined} */
  #meterTimer;

  /** @param {MediaStream} stream */
  constructor(stream) {
    this.stream = stream;
  }

  /**
   * Ask for camera and microphone once. Rejects with a MediaError.
   * @returns {Promise<LocalMedia>}
   */
  static async acquire() {
    try {
      return new LocalMedia(await navigator.mediaDevices.getUserMedia(CONSTRAINTS));
    } catch (err) {
      if (err instanceof Error && err.name === 'OverconstrainedError') {
        try {
          return new LocalMedia(await navigator.mediaDevices.getUserMedia({ audio: true, video: true }));
        } catch (retryErr) {
          throw new MediaError(mediaErrorCode(retryErr), retryErr);
        }
      }
      throw new MediaError(mediaErrorCode(err), err);
    }
  }

  get micEnabled() {
    return this.stream.getAudioTracks().some((t) => t.enabled);
  }

  get cameraEnabled() {
    return this.stream.getVideoTracks().some((t) => t.enabled);
  }

  /** @param {boolean} enabled */
  setMicEnabled(enabled) {
    for (const track of this.stream.getAudioTracks()) track.enabled = enabled;
  }

  /** @param {boolean} enabled */
  setCameraEnabled(enabled) {
    for (const track of this.stream.getVideoTracks()) track.enabled = enabled;
  }

  /**
   * Create (once) and resume the AudioContext. Browsers only let it run after a tap, so call this
   * from a tap handler; it is harmless to call it earlier too.
   */
  resumeAudio() {
    if (!this.#audioContext) {
      const Ctor = globalThis.AudioContext ?? /** @type {any} */ (globalThis).webkitAudioContext;
      if (!Ctor) return;
      this.#audioContext = new Ctor();
    }
    const ctx = /** @type {AudioContext} */ (this.#audioContext);
    if (ctx.state === 'suspended') ctx.resume().catch(() => {});
  }

  /**
   * Report the microphone level (0–1) about ten times a second, or null while audio is not running.
   * @param {(level: number | null) => void} onLevel
   */
  startLevelMeter(onLevel) {
    this.stopLevelMeter();
    this.resumeAudio();
    const ctx = this.#audioContext;
    if (!ctx || this.stream.getAudioTracks().length === 0) return;
    const source = ctx.createMediaStreamSource(this.stream);
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 512;
    source.connect(analyser);
    const samples = new Uint8Array(analyser.fftSize);
    this.#meterTimer = setInterval(() => {
      if (ctx.state !== 'running' || !this.micEnabled) {
        onLevel(ctx.state === 'running' ? 0 : null);
        return;
      }
      analyser.getByteTimeDomainData(samples);
      let sum = 0;
      for (const s of samples) sum += ((s - 128) / 128) ** 2;
      onLevel(Math.min(1, Math.sqrt(sum / samples.length) * 5));
    }, 100);
    this.#stopSource = () => {
      source.disconnect();
      analyser.disconnect();
    };
  }

  /** @type {() => void} */
  #stopSource = () => {};

  stopLevelMeter() {
    clearInterval(this.#meterTimer);
    this.#stopSource();
    this.#stopSource = () => {};
  }

  /** Release the camera and microphone (the camera light goes off). */
  stop() {
    this.stopLevelMeter();
    for (const track of this.stream.getTracks()) track.stop();
    this.#audioContext?.close().catch(() => {});
    this.#audioContext = null;
  }
}
