/** A single-consumer async queue: what a call's messages wait in until the application takes them. */

import { Fifo } from "./protocol/fifo.js";

type Waiter<T> = { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void };

export class AsyncQueue<T> {
  readonly #items = new Fifo<T>();
  #waiter: Waiter<T> | undefined;
  #done = false;
  #error: unknown;

  /**
   * @param onTake called when the consumer takes an item (credit flows back
   * from here, so a consumer that stops reading stops the sender).
   */
  constructor(private readonly onTake: (item: T) => void = () => {}) {}

  push(item: T): void {
    if (this.#done) return;
    const w = this.#waiter;
    if (w === undefined) {
      this.#items.push(item);
      return;
    }
    this.#waiter = undefined;
    this.onTake(item);
    w.resolve({ value: item, done: false });
  }

  /** No more items: the consumer sees the end (or `error`) after the items queued. */
  end(error?: unknown): void {
    if (this.#done) return;
    this.#done = true;
    this.#error = error;
    const w = this.#waiter;
    if (w !== undefined && this.#items.length === 0) {
      this.#waiter = undefined;
      if (error !== undefined) w.reject(error);
      else w.resolve({ value: undefined, done: true });
    }
  }

  /** Ends now, dropping what is queued: the consumer sees `error` next. */
  fail(error: unknown): void {
    this.#items.clear();
    this.#done = false;
    this.end(error);
  }

  get size(): number {
    return this.#items.length;
  }

  next(): Promise<IteratorResult<T>> {
    if (this.#items.length > 0) {
      const item = this.#items.shift() as T;
      this.onTake(item);
      return Promise.resolve({ value: item, done: false });
    }
    if (this.#done) {
      return this.#error !== undefined ? Promise.reject(this.#error) : Promise.resolve({ value: undefined, done: true });
    }
    if (this.#waiter !== undefined) return Promise.reject(new Error("a call's messages are read by one consumer at a time"));
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }
}
