/**
 * The part of RFC 8941 (Structured Field Values) that RFC 9421 signatures and RFC 9530 digests need:
 * parsing and serialising dictionaries whose members are items or inner lists, with parameters.
 * Strict: anything malformed throws, and the caller answers 401.
 */
import { fromBase64, toBase64 } from "./crypto";

export type BareItem = number | string | boolean | Token | Uint8Array;
export class Token {
  constructor(readonly value: string) {}
}
export type Params = [string, BareItem][];
export interface Item {
  value: BareItem;
  params: Params;
}
export interface InnerList {
  items: Item[];
  params: Params;
}
export type Member = Item | InnerList;
export const isInnerList = (m: Member): m is InnerList => "items" in m;

export class StructuredFieldError extends Error {}

class Parser {
  i = 0;
  constructor(readonly s: string) {}
  fail(what: string): never {
    throw new StructuredFieldError(`${what} at position ${this.i}`);
  }
  peek() {
    return this.s[this.i];
  }
  eof() {
    return this.i >= this.s.length;
  }
  skipSP() {
    while (this.s[this.i] === " ") this.i++;
  }
  skipOWS() {
    while (this.s[this.i] === " " || this.s[this.i] === "\t") this.i++;
  }

  key(): string {
    const m = /^[a-z*][a-z0-9_\-.*]*/.exec(this.s.slice(this.i));
    if (!m) this.fail("expected a key");
    this.i += m[0].length;
    return m[0];
  }

  bareItem(): BareItem {
    const c = this.peek();
    if (c === '"') return this.string();
    if (c === ":") return this.bytes();
    if (c === "?") return this.boolean();
    if (c === "-" || (c !== undefined && c >= "0" && c <= "9")) return this.number();
    if (c !== undefined && /[A-Za-z*]/.test(c)) return this.token();
    return this.fail("expected an item");
  }

  string(): string {
    this.i++; // opening quote
    let out = "";
    while (!this.eof()) {
      const c = this.s[this.i++]!;
      if (c === "\\") {
        const n = this.s[this.i++];
        if (n !== '"' && n !== "\\") this.fail("bad escape in string");
        out += n;
      } else if (c === '"') return out;
      else if (c < " " || c > "~") this.fail("bad character in string");
      else out += c;
    }
    return this.fail("unterminated string");
  }

  bytes(): Uint8Array {
    this.i++;
    const end = this.s.indexOf(":", this.i);
    if (end < 0) this.fail("unterminated byte sequence");
    const decoded = fromBase64(this.s.slice(this.i, end));
    if (!decoded) this.fail("bad base64 in byte sequence");
    this.i = end + 1;
    return decoded;
  }

  boolean(): boolean {
    this.i++;
    const c = this.s[this.i++];
    if (c === "1") return true;
    if (c === "0") return false;
    return this.fail("bad boolean");
  }

  number(): number {
    const m = /^-?\d{1,15}(\.\d{1,3})?/.exec(this.s.slice(this.i));
    if (!m) this.fail("bad number");
    this.i += m[0].length;
    return Number(m[0]);
  }

  token(): Token {
    const m = /^[A-Za-z*][A-Za-z0-9!#$%&'*+\-.^_`|~:/]*/.exec(this.s.slice(this.i));
    if (!m) this.fail("bad token");
    this.i += m[0].length;
    return new Token(m[0]);
  }

  params(): Params {
    const out: Params = [];
    while (this.peek() === ";") {
      this.i++;
      this.skipSP();
      const k = this.key();
      let v: BareItem = true;
      if (this.peek() === "=") {
        this.i++;
        v = this.bareItem();
      }
      const at = out.findIndex(([name]) => name === k);
      if (at >= 0) out[at] = [k, v];
      else out.push([k, v]);
    }
    return out;
  }

  member(): Member {
    if (this.peek() === "(") {
      this.i++;
      const items: Item[] = [];
      for (;;) {
        this.skipSP();
        if (this.peek() === ")") {
          this.i++;
          return { items, params: this.params() };
        }
        items.push({ value: this.bareItem(), params: this.params() });
        const c = this.peek();
        if (c !== " " && c !== ")") this.fail("expected space or ) in inner list");
      }
    }
    return { value: this.bareItem(), params: this.params() };
  }

  dictionary(): Map<string, Member> {
    const out = new Map<string, Member>();
    this.skipSP();
    while (!this.eof()) {
      const k = this.key();
      let m: Member;
      if (this.peek() === "=") {
        this.i++;
        m = this.member();
      } else m = { value: true, params: this.params() };
      out.set(k, m);
      this.skipOWS();
      if (this.eof()) break;
      if (this.peek() !== ",") this.fail("expected , between members");
      this.i++;
      this.skipOWS();
      if (this.eof()) this.fail("trailing comma");
    }
    return out;
  }
}

/** Parse a Dictionary field (e.g. Signature-Input, Signature, Content-Digest). Throws on bad input. */
export function parseDictionary(field: string): Map<string, Member> {
  return new Parser(field.trim()).dictionary();
}

export function serializeBareItem(v: BareItem): string {
  if (typeof v === "string") {
    if (/[^\x20-\x7e]/.test(v)) throw new StructuredFieldError("string with non-printable characters");
    return `"${v.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
  }
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(Math.round(v * 1000) / 1000);
  if (typeof v === "boolean") return v ? "?1" : "?0";
  if (v instanceof Token) return v.value;
  return `:${toBase64(v)}:`;
}

export function serializeParams(params: Params): string {
  return params.map(([k, v]) => (v === true ? `;${k}` : `;${k}=${serializeBareItem(v)}`)).join("");
}

export function serializeInnerList(list: InnerList): string {
  const items = list.items.map((i) => serializeBareItem(i.value) + serializeParams(i.params)).join(" ");
  return `(${items})${serializeParams(list.params)}`;
}
