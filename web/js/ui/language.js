/** The visible language toggle. */

import { byId } from './dom.js';

/**
 * Label the toggle with the language it switches to (its name is written in that language).
 * @param {string} targetLanguage
 */
export function renderLanguageToggle(targetLanguage) {
  byId('lang', HTMLButtonElement).lang = targetLanguage;
}

/** @param {() => void} handler */
export function onLanguageToggle(handler) {
  byId('lang', HTMLButtonElement).addEventListener('click', handler);
}
