/** Waiting in tests without fixed sleeps: poll an observable condition until it holds or a deadline passes. */

/** Poll `pred` (sync or async) every `everyMs` until it holds; fail after `timeoutMs`, naming `what`. */
export async function until(
  pred: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 30_000,
  everyMs = 20,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await Bun.sleep(everyMs);
  }
}
