/** A request body with no length (sent chunked): `bytes` in pieces of `size`. */
export function chunkedBody(bytes: Uint8Array, size: number): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(ctrl) {
      for (let i = 0; i < bytes.length; i += size) ctrl.enqueue(bytes.subarray(i, i + size));
      ctrl.close();
    },
  });
}
