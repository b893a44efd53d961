/** The one polite live status line shown above the call. */

import { setText } from '../i18n.js';
import { byId } from './dom.js';

/** @type {ReturnType<typeof setTimeout> | undefined} */
let clearTimer;

/**
 * Show a catalogue message; with clearAfterMs it fades back to empty (for confirmations).
 * @param {string | null} key
 * @param {{clearAfterMs?: number}} [options]
 */
export function setStatus(key, options = {}) {
  const el = byId('status', HTMLElement);
  clearTimeout(clearTimer);
  if (key === null) {
    el.removeAttribute('data-i18n');
    el.textContent = '';
    return;
  }
  setText(el, key);
  if (options.clearAfterMs) clearTimer = setTimeout(() => setStatus(null), options.clearAfterMs);
}

/** The catalogue key currently shown, if any. */
export function statusKey() {
  return byId('status', HTMLElement).getAttribute('data-i18n');
}
