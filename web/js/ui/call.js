/** The in-call view: remote video tiles in a grid, the small self-view and the three big buttons. */

import { setAttr, setText } from '../i18n.js';
import { byId, playStream } from './dom.js';

/** Videos whose playback the browser blocked until the next tap. */
const blocked = new Set(/** @type {HTMLVideoElement[]} */ ([]));
/** @type {(() => void) | null} */
let onBlocked = null;

function retryBlocked() {
  for (const video of [...blocked]) {
    blocked.delete(video);
    video.play().catch(() => blocked.add(video));
  }
}
// Any tap counts as permission to play sound; retry whatever was blocked.
document.addEventListener('pointerdown', retryBlocked, true);
document.addEventListener('keydown', retryBlocked, true);

/** @param {() => void} handler called when a remote video could not start without a tap */
export function onPlaybackBlocked(handler) {
  onBlocked = handler;
}

/** @param {HTMLVideoElement} video @param {MediaStream} stream */
async function play(video, stream) {
  if (!(await playStream(video, stream))) {
    blocked.add(video);
    onBlocked?.();
  }
}

function grid() {
  return byId('remote-grid', HTMLElement);
}

function updateCount() {
  const g = grid();
  g.dataset.count = String(g.children.length);
}

/** @param {string} participant */
function tileFor(participant) {
  for (const tile of grid().children) {
    if (tile instanceof HTMLElement && tile.dataset.tile === participant) return tile;
  }
  return null;
}

/**
 * Add a tile for a remote participant (before any media arrives it shows who is coming).
 * @param {string} participant
 * @param {import('../protocol.js').Role} role
 */
export function addRemote(participant, role) {
  if (tileFor(participant)) return;
  const tile = document.createElement('div');
  tile.className = 'tile';
  tile.dataset.tile = participant;
  tile.dataset.connected = 'false';

  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.setAttribute('playsinline', '');
  video.dataset.participant = participant;
  setAttr(video, 'aria-label', 'call.remote_video');

  const label = document.createElement('span');
  label.className = 'tile-label';
  setText(label, `role.${role}`);

  tile.append(video, label);
  grid().append(tile);
  updateCount();
}

/**
 * @param {string} participant
 * @param {MediaStream} stream
 */
export function setRemoteStream(participant, stream) {
  const video = tileFor(participant)?.querySelector('video');
  if (video) void play(video, stream);
}

/**
 * @param {string} participant
 * @param {boolean} connected
 */
export function setRemoteConnected(participant, connected) {
  const tile = tileFor(participant);
  if (tile) tile.dataset.connected = String(connected);
}

/** @param {string} participant */
export function removeRemote(participant) {
  const tile = tileFor(participant);
  if (!tile) return;
  const video = tile.querySelector('video');
  if (video) {
    blocked.delete(video);
    video.srcObject = null;
  }
  tile.remove();
  updateCount();
}

export function clearRemotes() {
  for (const tile of [...grid().children]) {
    if (tile instanceof HTMLElement && tile.dataset.tile) removeRemote(tile.dataset.tile);
  }
}

/**
 * Show our own camera small in the corner. Call from the Join tap so play() counts as user-started.
 * @param {MediaStream | null} stream
 */
export function setSelfStream(stream) {
  const video = byId('self-video', HTMLVideoElement);
  if (stream === null) {
    video.srcObject = null;
    return;
  }
  void playStream(video, stream);
}

/** @param {boolean} micOn */
export function renderMic(micOn) {
  const button = byId('mute', HTMLButtonElement);
  button.setAttribute('aria-pressed', String(!micOn));
  setText(byId('mute-label', HTMLElement), micOn ? 'call.mute' : 'call.unmute');
  byId('self-mic-off', HTMLElement).hidden = micOn;
}

/** @param {boolean} cameraOn */
export function renderCamera(cameraOn) {
  const button = byId('camera', HTMLButtonElement);
  button.setAttribute('aria-pressed', String(!cameraOn));
  setText(byId('camera-label', HTMLElement), cameraOn ? 'call.camera_off' : 'call.camera_on');
  byId('self-camera-off', HTMLElement).hidden = cameraOn;
  byId('self-video', HTMLVideoElement).closest('figure')?.setAttribute('data-camera', cameraOn ? 'on' : 'off');
}

/**
 * @param {{mute: () => void, camera: () => void, hangup: () => void}} handlers
 */
export function onControls(handlers) {
  byId('mute', HTMLButtonElement).addEventListener('click', handlers.mute);
  byId('camera', HTMLButtonElement).addEventListener('click', handlers.camera);
  byId('hangup', HTMLButtonElement).addEventListener('click', handlers.hangup);
}
