/** The UI catalogues (Danish by default, English on request) and filling of `data-i18n*` elements. */

export const LANGUAGES = /** @type {const} */ (['da', 'en']);
/** @typedef {typeof LANGUAGES[number]} Language */

const STORAGE_KEY = 'stue.lang';
const ATTRIBUTES = /** @type {const} */ ([
  ['data-i18n-aria-label', 'aria-label'],
  ['data-i18n-title', 'title'],
]);

/** @type {Record<string, string>} */
let catalogue = {};
/** @type {Language} */
let current = 'da';

/** @param {unknown} value @returns {value is Language} */
function isLanguage(value) {
  return typeof value === 'string' && /** @type {readonly string[]} */ (LANGUAGES).includes(value);
}

/** ?lang= wins, then the remembered choice, then Danish. */
function initialLanguage() {
  const fromUrl = new URLSearchParams(location.search).get('lang');
  if (isLanguage(fromUrl)) return fromUrl;
  try {
    const stored = localStorage.getItem(STORAGE_KEY);
    if (isLanguage(stored)) return stored;
  } catch {
    // Storage can be unavailable (private mode, policies); Danish is fine then.
  }
  return 'da';
}

/** @param {Language} lang @returns {Promise<Record<string, string>>} */
async function load(lang) {
  const response = await fetch(`/static/i18n/${lang}.json`, { cache: 'no-cache' });
  if (!response.ok) throw new Error(`catalogue ${lang}: HTTP ${response.status}`);
  return response.json();
}

/** The active language. */
export function language() {
  return current;
}

/** The other language, offered by the toggle. */
export function otherLanguage() {
  return current === 'da' ? 'en' : 'da';
}

/**
 * The text for a key in the active language (the key itself if missing, so a gap is visible in testing).
 * @param {string} key
 */
export function t(key) {
  const text = catalogue[key];
  if (text === undefined) console.warn(`i18n: missing key ${key}`);
  return text ?? key;
}

/**
 * Fill every `data-i18n`, `data-i18n-aria-label` and `data-i18n-title` element under root.
 * @param {ParentNode} [root]
 */
export function apply(root = document) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.getAttribute('data-i18n') ?? '');
  for (const [data, attr] of ATTRIBUTES) {
    for (const el of root.querySelectorAll(`[${data}]`)) el.setAttribute(attr, t(el.getAttribute(data) ?? ''));
  }
}

/**
 * Give an element a catalogue key and fill it now; it follows later language changes.
 * @param {Element} el
 * @param {string} key
 */
export function setText(el, key) {
  el.setAttribute('data-i18n', key);
  el.textContent = t(key);
}

/**
 * @param {Element} el
 * @param {'aria-label' | 'title'} attr
 * @param {string} key
 */
export function setAttr(el, attr, key) {
  el.setAttribute(`data-i18n-${attr}`, key);
  el.setAttribute(attr, t(key));
}

/**
 * Switch language, remember the choice, and refill the page.
 * @param {Language} lang
 * @param {boolean} [remember]
 */
export async function setLanguage(lang, remember = true) {
  catalogue = await load(lang);
  current = lang;
  document.documentElement.lang = lang;
  if (remember) {
    try {
      localStorage.setItem(STORAGE_KEY, lang);
    } catch {
      // Not remembering is acceptable.
    }
  }
  apply();
}

/** Load the initial catalogue; falls back to Danish if the chosen one cannot be loaded. */
export async function init() {
  const lang = initialLanguage();
  try {
    await setLanguage(lang, false);
  } catch (err) {
    if (lang === 'da') throw err;
    console.warn('i18n: falling back to Danish', err);
    await setLanguage('da', false);
  }
}
