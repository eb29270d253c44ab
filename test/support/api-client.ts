/**
 * Calls the v1 API of a running service as an authenticated caller. Shared by the test service
 * (test/support/service.ts) and the benchmarks' service (bench/lib.ts).
 */
export abstract class ApiClient {
  abstract get url(): string;
  /** Bearer token sent unless the caller sets its own Authorization. */
  protected abstract get token(): string;

  api(path: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (!headers.has("authorization")) headers.set("authorization", `Bearer ${this.token}`);
    if (init.body && !headers.has("content-type")) headers.set("content-type", "application/json");
    return fetch(`${this.url}${path}`, { ...init, headers });
  }

  async create(payload: Record<string, unknown>): Promise<string> {
    const res = await this.api("/v1/requests", { method: "POST", body: JSON.stringify(payload) });
    if (res.status !== 201) throw new Error(`create failed: ${res.status} ${await res.text()}`);
    return ((await res.json()) as { id: string }).id;
  }

  /** The magnet link the request's owner gets (with TORRENT__ACCESS=passkey, carrying its passkey). */
  async magnet(id: string): Promise<string> {
    const res = await this.api(`/v1/requests/${id}/magnet`);
    if (res.status !== 200) throw new Error(`magnet failed: ${res.status} ${await res.text()}`);
    return ((await res.json()) as { magnet_link: string }).magnet_link;
  }

  /** The request's web seed URL (the magnet's `ws=`, a folder: clients append the file name). */
  async webSeed(id: string): Promise<string> {
    const ws = new URLSearchParams((await this.magnet(id)).slice("magnet:?".length)).get("ws");
    if (!ws) throw new Error("the magnet link has no web seed");
    return ws;
  }

  async status(id: string): Promise<Record<string, any>> {
    const res = await this.api(`/v1/requests/${id}`);
    if (res.status !== 200) throw new Error(`status failed: ${res.status} ${await res.text()}`);
    return (await res.json()) as Record<string, any>;
  }
}
