// A request's busy and error state for the screen that sends it: one `run` does the
// bookkeeping every button and form needs (busy while in flight, the last error shown).

/** Turns what a request threw into the sentence the screen shows. */
export type Describe = (e: unknown) => string;

export const errorMessage: Describe = (e) => (e instanceof Error ? e.message : String(e));

export class RequestState {
  busy = $state(false);
  error = $state<string | null>(null);

  private readonly explain: Describe;

  /** `initiallyBusy`: for a load that begins as the component mounts. */
  constructor(explain: Describe = errorMessage, initiallyBusy = false) {
    this.explain = explain;
    if (initiallyBusy) this.busy = true;
  }

  /** Runs `fn`, busy meanwhile; a failure becomes `error`. Resolves to whether it succeeded. */
  async run(fn: () => Promise<unknown>): Promise<boolean> {
    this.busy = true;
    this.error = null;
    try {
      await fn();
      return true;
    } catch (e) {
      this.error = this.explain(e);
      return false;
    } finally {
      this.busy = false;
    }
  }
}
