/** The call page: wires media, signalling, peers and the views together. */

import * as i18n from './i18n.js';
import { checkLink } from './links.js';
import { LocalMedia, MediaError, isSupported } from './media.js';
import { PREPARED_MAX_AGE_MS, Peer, PreparedConnection, prepareCertificate } from './peer.js';
import { PING_INTERVAL_MS, socketUrl, tokenFromFragment } from './protocol.js';
import { Signalling } from './signalling.js';
import * as callView from './ui/call.js';
import { onLanguageToggle, renderLanguageToggle } from './ui/language.js';
import { onErrorAction, onRejoin, renderError } from './ui/message.js';
import * as preview from './ui/preview.js';
import { setStatus, statusKey } from './ui/status.js';
import { currentState, showState } from './ui/views.js';

/** @typedef {import('./protocol.js').Role} Role */

const CONNECTED_NOTICE_MS = 5000;
const CLEAR_PREVIEW_AFTER_MS = 2000;
/** Keep-alive while waiting alone in the call: a dead socket is noticed within two of these. */
const ALONE_PING_INTERVAL_MS = 5000;

/** Everything the page holds for one visit. */
const session = {
  /** @type {string | null} */
  token: null,
  /** @type {LocalMedia | null} */
  media: null,
  /** @type {Signalling | null} */
  signalling: null,
  /** @type {Map<string, Peer>} */
  peers: new Map(),
  /** @type {RTCIceServer[]} */
  iceServers: [],
  /** @type {Role} */
  role: 'citizen',
  joined: false,
  /** What the error view's button does; null when it has none. @type {(() => void) | null} */
  errorAction: null,
  /** @type {WakeLockSentinel | null} */
  wakeLock: null,
  /** A socket opened while the preview shows, so the tap joins without waiting for a handshake. */
  /** @type {WebSocket | null} */
  spareSocket: null,
  /** A peer connection made during the preview, for the first peer; see PreparedConnection. */
  /** @type {PreparedConnection | null} */
  prepared: null,
  /** @type {ReturnType<typeof setInterval> | undefined} */
  prepareTimer: undefined,
  /** Makes a new prepared connection; set only while the preview prepares. @type {(() => void) | null} */
  refreshPrepared: null,
};

// ---- errors -------------------------------------------------------------------------------------

/**
 * @param {string} code  catalogue prefix `error.<code>` and the `data-error` test hook
 * @param {{label: string, run: () => void} | null} [action]
 */
function showError(code, action = null) {
  session.errorAction = action?.run ?? null;
  renderError(code, action?.label ?? null);
  showState('error', code);
}

/** @param {unknown} err */
function showMediaError(err) {
  const code = err instanceof MediaError ? err.code : 'media_failed';
  showError(code, { label: 'error.retry', run: () => void startPreview() });
}

// ---- preview ------------------------------------------------------------------------------------

async function startPreview() {
  showState('loading');
  try {
    session.media ??= await LocalMedia.acquire();
  } catch (err) {
    console.warn('media: getUserMedia failed', err);
    showMediaError(err);
    return;
  }
  preview.showPreview(session.media.stream);
  // The call's self-view starts now too, so the tap does not wait for a second video player.
  callView.setSelfStream(session.media.stream);
  session.media.startLevelMeter(preview.setMicLevel);
  showState('preview');
  startPreparing(session.media.stream);
}

// ---- a connection made ahead ---------------------------------------------------------------------

/**
 * While the preview shows, keep a fresh prepared connection, so the tap does not wait for WebRTC to start. It is
 * replaced before it goes stale, when the network comes back, and when a hidden page is shown again (a hidden
 * page makes none: a tablet may sit on the preview for hours).
 * @param {MediaStream} stream
 */
function startPreparing(stream) {
  stopPreparing();
  session.refreshPrepared = () => {
    if (document.visibilityState !== 'visible') return;
    PreparedConnection.toOffer(stream, session.iceServers).then(
      (prepared) => {
        if (session.refreshPrepared === null) {
          prepared.close(); // the page moved on meanwhile
          return;
        }
        session.prepared?.close();
        session.prepared = prepared;
      },
      (err) => console.warn('peer: could not prepare a connection ahead', err),
    );
  };
  session.prepareTimer = setInterval(session.refreshPrepared, PREPARED_MAX_AGE_MS / 2);
  session.refreshPrepared();
}

/** Stop replacing the prepared connection (it is kept until the first peer takes it). */
function stopPreparing() {
  clearInterval(session.prepareTimer);
  session.prepareTimer = undefined;
  session.refreshPrepared = null;
}

/**
 * The prepared connection, once, if it suits these ICE servers (and is fresh enough when we are to offer).
 * @param {boolean} toOffer
 */
function takePrepared(toOffer) {
  const pc = session.prepared?.take(session.iceServers, toOffer) ?? null;
  session.prepared = null;
  return pc;
}

/** Alone in the call: the next one to come will offer, so have a connection ready to answer it. */
function prepareToAnswer() {
  if (!session.joined || session.peers.size > 0 || !session.media) return;
  session.prepared?.close();
  try {
    session.prepared = PreparedConnection.toAnswer(session.media.stream, session.iceServers);
  } catch (err) {
    session.prepared = null;
    console.warn('peer: could not prepare a connection to answer', err);
  }
}

/** The Join tap: everything that needs a user gesture happens synchronously in here. */
function join() {
  const media = session.media;
  if (!media) return;
  stopPreparing();
  enterCall(media);
  media.stopLevelMeter();
  // The preview's player goes once the call view is up; tearing it down now would delay the call.
  setTimeout(() => {
    if (currentState() !== 'preview') preview.clearPreview();
  }, CLEAR_PREVIEW_AFTER_MS);
}

/** @param {LocalMedia} media */
function enterCall(media) {
  // `join` goes out first; the rest is local work done while it travels.
  openSignalling();
  media.resumeAudio();
  callView.setSelfStream(media.stream);
  callView.renderMic(media.micEnabled);
  callView.renderCamera(media.cameraEnabled);
  showState('joining');
  setStatus('status.joining');
  void keepScreenAwake();
}

/** "Deltag igen" after hang-up, or "Fortsæt her" after the link was opened elsewhere. */
async function rejoin() {
  if (!session.media) {
    showState('loading');
    try {
      session.media = await LocalMedia.acquire();
    } catch (err) {
      showMediaError(err);
      return;
    }
  }
  session.media.resumeAudio();
  enterCall(session.media);
}

// ---- signalling ---------------------------------------------------------------------------------

function openSignalling() {
  if (!session.token) return;
  const signalling = new Signalling({ url: socketUrl(location), token: session.token, socket: session.spareSocket });
  session.spareSocket = null;
  session.signalling = signalling;
  session.joined = false;

  signalling.on('joined', (msg) => {
    session.joined = true;
    session.role = msg.role;
    session.iceServers = msg.ice_servers;
    if (msg.resumed) {
      resumePeers(msg.peers);
    } else {
      // A new participant id: every existing peer connection belongs to the old one.
      closeAllPeers();
      for (const entry of msg.peers) addPeer(entry.participant, entry.role, entry.polite, takePrepared(!entry.polite));
      setStatus(msg.peers.length > 0 ? 'status.connecting_peer' : 'status.waiting');
    }
    prepareToAnswer();
    renderCallState();
  });
  signalling.on('peer-joined', (msg) => {
    // Someone we know, back on another server after a signalling blip: their connection with us carries on.
    if (session.peers.has(msg.participant)) return;
    addPeer(msg.participant, msg.role, msg.polite, takePrepared(!msg.polite));
    setStatus('status.connecting_peer');
    renderCallState();
  });
  signalling.on('peer-left', (msg) => {
    removePeer(msg.participant);
    if (session.peers.size === 0) setStatus('status.peer_left');
    prepareToAnswer();
    renderCallState();
  });
  signalling.on('offer', (msg) => {
    // An offer from someone we have not heard join (a lost peer-joined): they are the newcomer.
    const peer = session.peers.get(msg.from) ?? addPeer(msg.from, otherRole(session.role), true, takePrepared(false));
    peer.handleOffer(msg.sdp);
    renderCallState();
  });
  signalling.on('answer', (msg) => session.peers.get(msg.from)?.handleAnswer(msg.sdp));
  signalling.on('candidate', (msg) => session.peers.get(msg.from)?.handleCandidate(msg.candidate));
  signalling.on('server-error', (msg) => console.warn(`signalling: server error ${msg.code} (${msg.ref ?? '-'})`));
  signalling.on('disconnected', ({ everJoined, delayMs }) => {
    console.info(`signalling: lost, retrying in ${delayMs} ms`);
    session.joined = false;
    if (everJoined) setStatus('status.reconnecting');
    else showError('unreachable');
  });
  signalling.on('fatal', ({ code }) => {
    endSession();
    if (code === 'bad_token') showError('bad_link');
    else showError('replaced', { label: 'error.continue_here', run: () => void rejoin() });
  });
  signalling.connect();
}

/**
 * The server kept us as the same participant across a signalling drop, so our peer connections carry on: forget
 * those who left meanwhile, meet those who came (the server's `polite` keeps each pair's roles by join order),
 * and repair what the drop may have cost (an offer or candidates sent while the socket was down).
 * @param {import('./protocol.js').PeerEntry[]} present
 */
function resumePeers(present) {
  const ids = new Set(present.map((entry) => entry.participant));
  for (const id of [...session.peers.keys()]) if (!ids.has(id)) removePeer(id);
  for (const entry of present) {
    if (!session.peers.has(entry.participant)) addPeer(entry.participant, entry.role, entry.polite, null);
  }
  for (const peer of session.peers.values()) peer.repair();
  const allConnected = [...session.peers.values()].every((peer) => peer.state === 'connected');
  if (session.peers.size === 0) setStatus('status.waiting');
  else if (allConnected) setStatus('status.connected', { clearAfterMs: CONNECTED_NOTICE_MS });
  else setStatus('status.connecting_peer');
}

/** @param {Role} role @returns {Role} */
function otherRole(role) {
  return role === 'citizen' ? 'clinician' : 'citizen';
}

/** Waiting (nobody else here) or in-call; only once joined. */
function renderCallState() {
  if (!session.joined) return;
  const alone = session.peers.size === 0;
  showState(alone ? 'waiting' : 'in-call');
  // Alone, no media path breaks to tell us the network changed under the socket: ping more often.
  session.signalling?.setPingInterval(alone ? ALONE_PING_INTERVAL_MS : PING_INTERVAL_MS);
}

// ---- peers --------------------------------------------------------------------------------------

/**
 * @param {string} id
 * @param {Role} role
 * @param {boolean} polite
 * @param {RTCPeerConnection | null} prepared
 */
function addPeer(id, role, polite, prepared) {
  const existing = session.peers.get(id);
  if (existing) {
    prepared?.close();
    return existing;
  }
  const media = /** @type {LocalMedia} */ (session.media);
  const signalling = /** @type {Signalling} */ (session.signalling);
  const peer = new Peer({
    id,
    role,
    polite,
    iceServers: session.iceServers,
    localStream: media.stream,
    send: (message) => signalling.send(message),
    prepared,
  });
  session.peers.set(id, peer);
  callView.addRemote(id, role);
  peer.on('stream', ({ stream }) => callView.setRemoteStream(id, stream));
  peer.on('state', ({ state }) => {
    callView.setRemoteConnected(id, state === 'connected');
    if (state === 'connected') setStatus('status.connected', { clearAfterMs: CONNECTED_NOTICE_MS });
    else if (state === 'disconnected' || state === 'failed') {
      setStatus('status.peer_unstable');
      // The network may have changed under us: find out now whether signalling still gets through.
      session.signalling?.checkAlive();
    }
  });
  return peer;
}

/** @param {string} id */
function removePeer(id) {
  session.peers.get(id)?.close();
  session.peers.delete(id);
  callView.removeRemote(id);
}

function closeAllPeers() {
  for (const id of [...session.peers.keys()]) removePeer(id);
}

// ---- controls -----------------------------------------------------------------------------------

function toggleMic() {
  const media = session.media;
  if (!media) return;
  media.setMicEnabled(!media.micEnabled);
  callView.renderMic(media.micEnabled);
}

function toggleCamera() {
  const media = session.media;
  if (!media) return;
  media.setCameraEnabled(!media.cameraEnabled);
  callView.renderCamera(media.cameraEnabled);
}

/** Leave, release the camera and microphone, and forget the call. */
function endSession() {
  stopPreparing();
  session.prepared?.close();
  session.prepared = null;
  session.signalling?.leave();
  session.signalling?.removeAllListeners();
  session.signalling = null;
  session.joined = false;
  closeAllPeers();
  callView.setSelfStream(null);
  session.media?.stop();
  session.media = null;
  setStatus(null);
  void session.wakeLock?.release().catch(() => {});
  session.wakeLock = null;
}

function hangUp() {
  endSession();
  showState('ended');
}

/** Tablets must not dim and lock in the middle of a conversation. */
async function keepScreenAwake() {
  if (!('wakeLock' in navigator) || session.wakeLock) return;
  try {
    session.wakeLock = await navigator.wakeLock.request('screen');
    session.wakeLock.addEventListener('release', () => {
      session.wakeLock = null;
    });
  } catch {
    // Not granted (battery saver, unsupported): the call works anyway.
  }
}

// ---- language -----------------------------------------------------------------------------------

async function toggleLanguage() {
  try {
    await i18n.setLanguage(i18n.otherLanguage());
    renderLanguageToggle(i18n.otherLanguage());
  } catch (err) {
    console.warn('i18n: could not switch language', err);
  }
}

// ---- start --------------------------------------------------------------------------------------

async function boot() {
  for (;;) {
    try {
      await i18n.init();
      break;
    } catch (err) {
      console.warn('i18n: catalogue not loaded, retrying', err);
      await new Promise((resolve) => setTimeout(resolve, 3000));
    }
  }
  renderLanguageToggle(i18n.otherLanguage());
  onLanguageToggle(() => void toggleLanguage());
  preview.onJoin(join);
  callView.onControls({ mute: toggleMic, camera: toggleCamera, hangup: hangUp });
  callView.onPlaybackBlocked(() => setStatus('status.tap_to_hear'));
  document.addEventListener('pointerdown', () => {
    if (statusKey() === 'status.tap_to_hear') setStatus(null);
  });
  onErrorAction(() => session.errorAction?.());
  onRejoin(() => void rejoin());
  addEventListener('online', () => {
    session.signalling?.retryNow();
    session.signalling?.checkAlive(); // a socket kept open across the change may lead nowhere now
    session.refreshPrepared?.(); // its candidates were gathered on the network that went away
  });
  // Tell the others at once instead of after the server notices the socket is gone.
  addEventListener('pagehide', () => session.signalling?.leave());
  // A page restored from the back/forward cache has left already; start afresh.
  addEventListener('pageshow', (event) => {
    if (event.persisted) location.reload();
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && (!session.prepared || session.prepared.stale)) {
      session.refreshPrepared?.();
    }
    if (document.visibilityState === 'visible' && session.signalling) {
      void keepScreenAwake();
      session.signalling.checkAlive(); // after the tablet slept, its socket may have died without a word
    }
  });

  if (!isSupported()) {
    showState('unsupported');
    return;
  }
  session.token = tokenFromFragment(location.hash);
  if (!session.token) {
    showError('bad_link');
    return;
  }
  // Made while the link is checked and the camera starts; no connection waits for it later.
  void prepareCertificate();
  // A dead link is told at once, before the browser asks for the camera.
  if ((await checkLink(session.token)) === 'invalid') {
    showError('bad_link');
    return;
  }
  // Opening the socket sends nothing: the others learn of us only when the tap sends `join`.
  try {
    session.spareSocket = new WebSocket(socketUrl(location));
  } catch (err) {
    console.warn('signalling: could not open the socket ahead', err);
  }
  await startPreview();
}

void boot();
