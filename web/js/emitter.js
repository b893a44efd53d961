/** A tiny typed event emitter shared by the non-DOM layers (signalling, peer). */

/**
 * @template {Record<string, any>} EventMap
 */
export class Emitter {
  /** @type {Map<keyof EventMap, Set<(detail: any) => void>>} */
  #handlers = new Map();

  /**
   * Subscribe to one event type; returns a function that unsubscribes.
   * @template {keyof EventMap} K
   * @param {K} type
   * @param {(detail: EventMap[K]) => void} handler
   * @returns {() => void}
   */
  on(type, handler) {
    let set = this.#handlers.get(type);
    if (!set) {
      set = new Set();
      this.#handlers.set(type, set);
    }
    set.add(handler);
    return () => set.delete(handler);
  }

  /**
   * @template {keyof EventMap} K
   * @param {K} type
   * @param {EventMap[K]} detail
   */
  emit(type, detail) {
    const set = this.#handlers.get(type);
    if (!set) return;
    for (const handler of [...set]) {
      try {
        handler(detail);
      } catch (err) {
        // One broken listener must not stop the others (or the socket loop that emitted).
        console.error(`listener for ${String(type)} failed`, err);
      }
    }
  }

  /** Drop every listener (used when an object is discarded). */
  removeAllListeners() {
    this.#handlers.clear();
  }
}
