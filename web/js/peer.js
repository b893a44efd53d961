/** One remote participant: an RTCPeerConnection driven by the perfect negotiation pattern. No DOM. */

import { Emitter } from './emitter.js';
import * as protocol from './protocol.js';

/** How long "disconnected" may last before we restart ICE ourselves. */
export const DISCONNECT_GRACE_MS = 2000;
/** A polite peer that has not been offered anything by then offers itself (the newcomer may be stuck). */
export const POLITE_OFFER_FALLBACK_MS = 4000;
/** An offer unanswered for this long was lost on the way (signalling is soft state): roll back and offer again. */
export const OFFER_ANSWER_TIMEOUT_MS = 5000;

/** A prepared offer older than this is not sent: the network (and so its host candidates) may have changed. */
export const PREPARED_MAX_AGE_MS = 5 * 60_000;

/** @typedef {'new' | 'connecting' | 'connected' | 'disconnected' | 'failed' | 'closed'} PeerState */

/** @type {RTCCertificate | null} */
let pageCertificate = null;
/** @type {Promise<void> | null} */
let certificateMade = null;

/**
 * Make this page's DTLS certificate once, ahead of the first connection, so no connection waits for key generation.
 * Every connection of the page uses it; without it (an old browser) each connection makes its own.
 */
export function prepareCertificate() {
  certificateMade ??= (async () => {
    if (typeof RTCPeerConnection.generateCertificate !== 'function') return;
    try {
      pageCertificate = await RTCPeerConnection.generateCertificate(
        /** @type {EcKeyGenParams} */ ({ name: 'ECDSA', namedCurve: 'P-256' }),
      );
    } catch (err) {
      console.warn('peer: no certificate made ahead', err);
    }
  })();
  return certificateMade;
}

/** @param {RTCIceServer[]} iceServers @returns {RTCConfiguration} */
function configuration(iceServers) {
  return pageCertificate ? { iceServers, certificates: [pageCertificate] } : { iceServers };
}

/** @param {RTCIceServer[]} a @param {RTCIceServer[]} b */
function sameIceServers(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * A connection made ahead, so the tap does not wait for WebRTC to start. Two kinds:
 * - while the preview shows, one that will *offer*: our tracks are added, an offer is set and its candidates
 *   gathered. The newcomer sends that offer as it is.
 * - once we wait alone in the call, one that will *answer*: our tracks are added and nothing else. The newcomer's
 *   offer is applied to it. It never set an offer of its own: a connection that rolls one back keeps the ICE role
 *   of its offer in Chrome, and the two sides' first connectivity checks then collide (a role conflict that costs a
 *   ~50 ms round of checks in half the calls).
 */
export class PreparedConnection {
  /** @type {RTCPeerConnection | null} */
  #pc;
  #iceServers;
  #madeAt;

  /** @param {RTCPeerConnection} pc @param {RTCIceServer[]} iceServers */
  constructor(pc, iceServers) {
    this.#pc = pc;
    this.#iceServers = iceServers;
    this.#madeAt = performance.now();
  }

  /**
   * A connection that will answer: only our tracks.
   * @param {MediaStream} localStream
   * @param {RTCIceServer[]} iceServers
   */
  static toAnswer(localStream, iceServers) {
    const pc = new RTCPeerConnection(configuration(iceServers));
    for (const track of localStream.getTracks()) pc.addTrack(track, localStream);
    return new PreparedConnection(pc, iceServers);
  }

  /**
   * A connection that will offer: our tracks, an offer set and its candidates gathered.
   * @param {MediaStream} localStream
   * @param {RTCIceServer[]} iceServers
   * @returns {Promise<PreparedConnection>}
   */
  static async toOffer(localStream, iceServers) {
    await prepareCertificate();
    const pc = new RTCPeerConnection(configuration(iceServers));
    const prepared = new PreparedConnection(pc, iceServers);
    try {
      for (const track of localStream.getTracks()) pc.addTrack(track, localStream);
      await pc.setLocalDescription();
    } catch (err) {
      prepared.close();
      throw err;
    }
    return prepared;
  }

  /** An offer made too long ago to be sent (an answering connection is never stale). */
  get stale() {
    return this.#pc?.signalingState === 'have-local-offer' && performance.now() - this.#madeAt > PREPARED_MAX_AGE_MS;
  }

  /**
   * Hand the connection over (once) if it suits: made with these ICE servers, and of the right kind (an offer to
   * be sent must not be stale; a connection that is to answer must not have an offer of its own). Otherwise
   * close it and return null.
   * @param {RTCIceServer[]} iceServers
   * @param {boolean} toOffer
   * @returns {RTCPeerConnection | null}
   */
  take(iceServers, toOffer) {
    const pc = this.#pc;
    if (!pc) return null;
    const suits = toOffer ? !this.stale : pc.signalingState !== 'have-local-offer';
    this.#pc = null;
    if (pc.signalingState === 'closed' || !sameIceServers(iceServers, this.#iceServers) || !suits) {
      pc.close();
      return null;
    }
    return pc;
  }

  close() {
    this.#pc?.close();
    this.#pc = null;
  }
}

/**
 * @typedef {object} PeerEvents
 * @property {{stream: MediaStream}} stream  remote media arrived (fires once per remote stream)
 * @property {{state: PeerState}} state
 */

/**
 * @typedef {object} PeerOptions
 * @property {string} id  the remote participant id
 * @property {import('./protocol.js').Role} role
 * @property {boolean} polite  from the server's peer entry / peer-joined
 * @property {RTCIceServer[]} iceServers
 * @property {MediaStream} localStream
 * @property {(message: import('./protocol.js').ClientMessage) => void} send
 * @property {RTCPeerConnection | null} [prepared]  from PreparedConnection.take: carries our tracks (and, to offer,
 *   an offer)
 */

/** @extends {Emitter<PeerEvents>} */
export class Peer extends Emitter {
  /** @type {RTCPeerConnection} */
  #pc;
  #makingOffer = false;
  #ignoreOffer = false;
  #isSettingRemoteAnswerPending = false;
  #tracksAdded = false;
  /** A polite peer leaves the first offer to the newcomer (until the fallback timer). */
  #holdOffers = false;
  #closed = false;
  /** Incoming signalling is applied in arrival order, one message at a time. */
  #queue = Promise.resolve();
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #graceTimer;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #fallbackTimer;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #answerTimer;
  /** @type {MediaStream | null} */
  #remoteStream = null;
  /** @type {PeerState} */
  #state = 'new';
  #localStream;
  #send;

  /** @param {PeerOptions} options */
  constructor(options) {
    super();
    this.id = options.id;
    this.role = options.role;
    this.polite = options.polite;
    this.#localStream = options.localStream;
    this.#send = options.send;
    this.#pc = options.prepared ?? new RTCPeerConnection(configuration(options.iceServers));
    this.#tracksAdded = Boolean(options.prepared);
    this.#wire();
    if (this.polite) {
      // The newcomer offers; the answer carries our tracks without a second round. The timer covers a newcomer
      // that never offers.
      this.#holdOffers = true;
      this.#fallbackTimer = setTimeout(() => this.#enqueue(async () => this.#offerOnOurOwn()), POLITE_OFFER_FALLBACK_MS);
    } else if (this.#pc.signalingState === 'have-local-offer') {
      // A prepared offer: its candidates gathered while the preview showed, and are in its SDP.
      this.#sendDescription();
      if (this.#pc.iceGatheringState === 'complete') this.#send(protocol.candidate(this.id, null));
    } else {
      this.#addLocalTracks();
      // Offer now rather than on negotiationneeded, which a busy page delivers a task later; the event that
      // follows finds the negotiation under way and does nothing.
      void this.#offer();
    }
  }

  get state() {
    return this.#state;
  }

  /** @param {string} sdp */
  handleOffer(sdp) {
    this.#enqueue(() => this.#handleDescription({ type: 'offer', sdp }));
  }

  /** @param {string} sdp */
  handleAnswer(sdp) {
    this.#enqueue(() => this.#handleDescription({ type: 'answer', sdp }));
  }

  /** @param {import('./protocol.js').CandidateObject | null} candidate */
  handleCandidate(candidate) {
    this.#enqueue(async () => {
      try {
        if (candidate === null || candidate.candidate === '') {
          await this.#pc.addIceCandidate();
        } else {
          await this.#pc.addIceCandidate(candidate);
        }
      } catch (err) {
        // Candidates for an offer we chose to ignore are expected to fail.
        if (!this.#ignoreOffer) console.warn(`peer ${this.id}: addIceCandidate failed`, err);
      }
    });
  }

  /**
   * After signalling came back: what was sent while it was down is lost. An offer still unanswered is made again;
   * a connection that is not up restarts ICE (and so gathers and sends fresh candidates).
   */
  repair() {
    if (this.#closed) return;
    this.#enqueue(async () => {
      const pc = this.#pc;
      if (pc.signalingState === 'have-local-offer') await this.#offerAgain();
      else if (this.#state !== 'connected' && pc.signalingState === 'stable' && !this.#holdOffers) this.#restartIce();
    });
  }

  close() {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#graceTimer);
    clearTimeout(this.#fallbackTimer);
    clearTimeout(this.#answerTimer);
    this.#pc.onnegotiationneeded = this.#pc.onicecandidate = this.#pc.ontrack = null;
    this.#pc.oniceconnectionstatechange = this.#pc.onconnectionstatechange = this.#pc.onsignalingstatechange = null;
    this.#pc.close();
    this.#setState('closed');
    this.removeAllListeners();
  }

  #wire() {
    const pc = this.#pc;
    pc.onnegotiationneeded = () => void this.#offer();
    pc.onicecandidate = ({ candidate }) => {
      // null (and, in some browsers, an empty candidate) marks the end of gathering.
      const init = candidate && candidate.candidate ? candidate.toJSON() : null;
      try {
        this.#send(protocol.candidate(this.id, init));
      } catch (err) {
        console.warn(`peer ${this.id}: candidate not sent`, err);
      }
    };
    pc.ontrack = ({ track, streams }) => {
      const stream = streams[0] ?? this.#remoteStream ?? new MediaStream();
      if (!streams[0] && !stream.getTracks().includes(track)) stream.addTrack(track);
      if (stream !== this.#remoteStream) {
        this.#remoteStream = stream;
        this.emit('stream', { stream });
      }
    };
    pc.onsignalingstatechange = () => {
      if (pc.signalingState === 'stable') clearTimeout(this.#answerTimer);
    };
    pc.oniceconnectionstatechange = () => this.#onConnectivity();
    pc.onconnectionstatechange = () => this.#onConnectivity();
  }

  async #offer() {
    const pc = this.#pc;
    if (this.#holdOffers || this.#makingOffer || this.#closed || pc.signalingState !== 'stable') return;
    try {
      this.#makingOffer = true;
      await pc.setLocalDescription();
      this.#sendDescription();
    } catch (err) {
      console.warn(`peer ${this.id}: could not make an offer`, err);
    } finally {
      this.#makingOffer = false;
    }
  }

  /** Polite, and the newcomer has not offered in time: offer ourselves. */
  #offerOnOurOwn() {
    if (!this.#holdOffers) return;
    this.#holdOffers = false;
    this.#addLocalTracks();
    void this.#offer();
  }

  #addLocalTracks() {
    if (this.#tracksAdded || this.#closed) return;
    this.#tracksAdded = true;
    for (const track of this.#localStream.getTracks()) this.#pc.addTrack(track, this.#localStream);
  }

  /** @param {RTCSessionDescriptionInit} description */
  async #handleDescription(description) {
    const pc = this.#pc;
    const readyForOffer =
      !this.#makingOffer && (pc.signalingState === 'stable' || this.#isSettingRemoteAnswerPending);
    const offerCollision = description.type === 'offer' && !readyForOffer;
    this.#ignoreOffer = !this.polite && offerCollision;
    if (this.#ignoreOffer) return;
    try {
      this.#isSettingRemoteAnswerPending = description.type === 'answer';
      if (offerCollision) {
        // Explicit rollback: older Safari does not roll back implicitly in setRemoteDescription.
        await Promise.all([pc.setLocalDescription({ type: 'rollback' }), pc.setRemoteDescription(description)]);
      } else {
        await pc.setRemoteDescription(description);
      }
      this.#isSettingRemoteAnswerPending = false;
      if (description.type === 'offer') {
        clearTimeout(this.#fallbackTimer);
        this.#holdOffers = false;
        this.#addLocalTracks();
        // The answer goes out before we apply it: the offerer applies it while we do, so neither side's first
        // connectivity checks reach the other before it knows our ICE credentials (Chrome then waits ~50 ms
        // for its next round of checks).
        const answer = await pc.createAnswer();
        this.#sendDescription(answer);
        await pc.setLocalDescription(answer);
      }
    } catch (err) {
      this.#isSettingRemoteAnswerPending = false;
      console.warn(`peer ${this.id}: could not apply ${description.type}`, err);
    }
  }

  /**
   * Send our offer or answer: the local description, or an answer not applied yet.
   * @param {RTCSessionDescriptionInit | null} [local]
   */
  #sendDescription(local = this.#pc.localDescription) {
    if (!local?.sdp || this.#closed || (local.type !== 'offer' && local.type !== 'answer')) return;
    try {
      this.#send(protocol.description(local.type, this.id, local.sdp));
    } catch (err) {
      console.warn(`peer ${this.id}: ${local.type} not sent`, err);
    }
    if (local.type === 'offer') {
      clearTimeout(this.#answerTimer);
      this.#answerTimer = setTimeout(() => this.#enqueue(() => this.#offerAgain()), OFFER_ANSWER_TIMEOUT_MS);
    }
  }

  /** The offer (or its answer) was lost: take it back and make a fresh one. */
  async #offerAgain() {
    const pc = this.#pc;
    if (pc.signalingState !== 'have-local-offer') return;
    console.warn(`peer ${this.id}: no answer to our offer; offering again`);
    try {
      await pc.setLocalDescription({ type: 'rollback' });
    } catch (err) {
      console.warn(`peer ${this.id}: rollback failed`, err);
      return;
    }
    await this.#offer();
  }

  #onConnectivity() {
    const pc = this.#pc;
    const ice = pc.iceConnectionState;
    // connectionState is missing in older browsers; the ICE state tells the same story there.
    /** @type {string} */
    const overall = pc.connectionState ?? ice;
    if (ice === 'failed' || overall === 'failed') {
      clearTimeout(this.#graceTimer);
      this.#restartIce();
    } else if (ice === 'disconnected' || overall === 'disconnected') {
      clearTimeout(this.#graceTimer);
      this.#graceTimer = setTimeout(() => {
        if (pc.iceConnectionState === 'disconnected' || pc.connectionState === 'disconnected') this.#restartIce();
      }, DISCONNECT_GRACE_MS);
    } else {
      clearTimeout(this.#graceTimer);
    }
    /** @type {PeerState} */
    let state;
    if (overall === 'connected' || overall === 'completed') state = 'connected';
    else if (overall === 'checking') state = 'connecting';
    else state = /** @type {PeerState} */ (overall);
    this.#setState(state);
  }

  #restartIce() {
    if (this.#closed) return;
    if (typeof this.#pc.restartIce === 'function') {
      this.#pc.restartIce(); // → negotiationneeded → a new offer through signalling
      return;
    }
    this.#enqueue(async () => {
      try {
        this.#makingOffer = true;
        await this.#pc.setLocalDescription(await this.#pc.createOffer({ iceRestart: true }));
        this.#sendDescription();
      } catch (err) {
        console.warn(`peer ${this.id}: ICE restart failed`, err);
      } finally {
        this.#makingOffer = false;
      }
    });
  }

  /** @param {() => Promise<void>} task */
  #enqueue(task) {
    this.#queue = this.#queue.then(() => (this.#closed ? undefined : task()));
  }

  /** @param {PeerState} state */
  #setState(state) {
    if (state === this.#state) return;
    this.#state = state;
    this.emit('state', { state });
  }
}
