/** The preview: the person's own camera, a microphone level and the one big Join button. */

import { byId, playStream } from './dom.js';

const METER_STEPS = 5;

/** @param {MediaStream} stream */
export function showPreview(stream) {
  void playStream(byId('preview-video', HTMLVideoElement), stream);
}

export function clearPreview() {
  const video = byId('preview-video', HTMLVideoElement);
  video.srcObject = null;
  setMicLevel(null);
}

/**
 * @param {number | null} level 0–1, or null when the meter cannot run (audio not started yet)
 */
export function setMicLevel(level) {
  const meter = byId('mic-meter', HTMLElement);
  meter.dataset.active = String(level !== null);
  meter.dataset.level = String(level === null ? 0 : Math.round(level * METER_STEPS));
}

/** @param {() => void} handler */
export function onJoin(handler) {
  byId('join', HTMLButtonElement).addEventListener('click', handler);
}

export function focusJoin() {
  byId('join', HTMLButtonElement).focus();
}
