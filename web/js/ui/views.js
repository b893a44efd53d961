/** Which view is on screen; mirrors the page state to `body[data-state]` (also a test hook). */

import { byId } from './dom.js';

/** @typedef {'loading' | 'preview' | 'joining' | 'waiting' | 'in-call' | 'ended' | 'error' | 'unsupported'} PageState */

/** @type {Record<PageState, string>} */
const VIEW_FOR_STATE = {
  loading: 'view-loading',
  preview: 'view-preview',
  joining: 'view-call',
  waiting: 'view-call',
  'in-call': 'view-call',
  ended: 'view-ended',
  error: 'view-error',
  unsupported: 'view-unsupported',
};

/** Views whose heading takes focus when they appear, so screen readers announce the change. */
const FOCUS_HEADING = new Set(['view-error', 'view-ended', 'view-unsupported']);

/**
 * @param {PageState} state
 * @param {string} [errorCode]
 */
export function showState(state, errorCode) {
  const body = document.body;
  const previousView = VIEW_FOR_STATE[/** @type {PageState} */ (body.dataset.state)] ?? null;
  body.dataset.state = state;
  if (state === 'error' && errorCode) body.dataset.error = errorCode;
  else delete body.dataset.error;

  const viewId = VIEW_FOR_STATE[state];
  for (const id of new Set(Object.values(VIEW_FOR_STATE))) byId(id, HTMLElement).hidden = id !== viewId;
  if (FOCUS_HEADING.has(viewId) && (previousView !== viewId || state === 'error')) {
    byId(viewId, HTMLElement).querySelector('h2')?.focus();
  }
}

/** @returns {PageState} */
export function currentState() {
  return /** @type {PageState} */ (document.body.dataset.state ?? 'loading');
}
