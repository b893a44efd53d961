/** Asking the server whether the page's link still opens a consultation. No DOM. */

/** @typedef {'valid' | 'invalid' | 'unknown'} LinkStatus */

/**
 * 'invalid' only when the server says so; any other trouble is 'unknown', and joining will tell.
 * @param {string} token
 * @param {number} [timeoutMs]
 * @returns {Promise<LinkStatus>}
 */
export async function checkLink(token, timeoutMs = 5000) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  try {
    const response = await fetch('/api/link', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token }),
      cache: 'no-store',
      signal: abort.signal,
    });
    if (response.ok) return 'valid';
    return response.status === 404 ? 'invalid' : 'unknown';
  } catch {
    return 'unknown';
  } finally {
    clearTimeout(timer);
  }
}
