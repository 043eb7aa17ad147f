/** A single-consumer async queue: what a call's messages wait in until the application takes them. */

type Waiter<T> = { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void };

export class AsyncQueue<T> {
  private readonly items: T[] = [];
  private head = 0;
  private waiter: Waiter<T> | undefined;
  private done = false;
  private error: unknown;

  /**
   * @param onTake called when the consumer takes an item (credit flows back
   * from here, so a consumer that stops reading stops the sender).
   */
  constructor(private readonly onTake: (item: T) => void = () => {}) {}

  push(item: T): void {
    if (this.done) return;
    const w = this.waiter;
    if (w !== undefined) {
      this.waiter = undefined;
      this.onTake(item);
      w.resolve({ value: item, done: false });
      return;
    }
    this.items.push(item);
  }

  /** No more items: the consumer sees the end (or `error`) after the items queued. */
  end(error?: unknown): void {
    if (this.done) return;
    this.done = true;
    this.error = error;
    const w = this.waiter;
    if (w !== undefined && this.head === this.items.length) {
      this.waiter = undefined;
      if (error !== undefined) w.reject(error);
      else w.resolve({ value: undefined, done: true });
    }
  }

  /** Ends now, dropping what is queued: the consumer sees `error` next. */
  fail(error: unknown): void {
    this.items.length = 0;
    this.head = 0;
    this.done = false;
    this.end(error);
  }

  get size(): number {
    return this.items.length - this.head;
  }

  next(): Promise<IteratorResult<T>> {
    if (this.head < this.items.length) {
      const item = this.items[this.head] as T;
      this.items[this.head] = undefined as T;
      this.head += 1;
      if (this.head > 1024 && this.head * 2 > this.items.length) {
        this.items.splice(0, this.head);
        this.head = 0;
      }
      this.onTake(item);
      return Promise.resolve({ value: item, done: false });
    }
    if (this.done) {
      return this.error !== undefined ? Promise.reject(this.error) : Promise.resolve({ value: undefined, done: true });
    }
    if (this.waiter !== undefined) return Promise.reject(new Error("a call's messages are read by one consumer at a time"));
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }
}
