/** A deadline for a promise that cannot be cancelled (a Redis reply, a connect): shared by the Redis stores. */

/**
 * `promise`, or a rejection with `Error(message)` once `ms` have passed; the timer never outlives the call.
 *
 * @param promise What to wait for.
 * @param ms The longest wait, in milliseconds.
 * @param message The rejection's message when the deadline passes.
 * @returns What `promise` resolves to.
 */
export async function within<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
