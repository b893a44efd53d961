/** The calm full-page messages: errors (with an optional action) and the ended view. */

import { setText } from '../i18n.js';
import { byId } from './dom.js';

/**
 * Fill the error view for a code; `action` is the catalogue key of its button, or null for none.
 * @param {string} code
 * @param {string | null} action
 */
export function renderError(code, action) {
  setText(byId('error-heading', HTMLElement), `error.${code}.title`);
  setText(byId('error-body', HTMLElement), `error.${code}.body`);
  const button = byId('error-action', HTMLButtonElement);
  button.hidden = action === null;
  if (action !== null) setText(button, action);
}

/** @param {() => void} handler */
export function onErrorAction(handler) {
  byId('error-action', HTMLButtonElement).addEventListener('click', handler);
}

/** @param {() => void} handler */
export function onRejoin(handler) {
  byId('rejoin', HTMLButtonElement).addEventListener('click', handler);
}
