/**
 * meta.attachments: {key: {content_type, file_name, contents}}, contents a Uint8Array with Buffer's toString
 * encodings (utf8 and base64 decoded by the host) and Buffer's toJSON.
 */
import type { GuestAttachment } from '../contract';
import { fromCharCode, put, strToLower, StringFn, TypeErrorCtor, typedSet } from './primordials';

const HEX = '0123456789abcdef';

let initContents: (c: AttachmentContents, utf8: string, base64: string) => void;

export class AttachmentContents extends Uint8Array {
  #utf8 = '';
  #base64 = '';
  static {
    // Not a static method: plugin code must not be able to change a contents' text.
    initContents = (c, utf8, base64) => {
      c.#utf8 = utf8;
      c.#base64 = base64;
    };
  }
  override toString(encoding?: unknown): string {
    const enc = encoding === undefined ? 'utf8' : strToLower(StringFn(encoding));
    if (enc === 'utf8' || enc === 'utf-8') return this.#utf8;
    if (enc === 'base64') return this.#base64;
    if (enc === 'hex') {
      let s = '';
      for (let i = 0; i < this.length; i++) s += HEX[this[i] >> 4] + HEX[this[i] & 15];
      return s;
    }
    if (enc === 'latin1' || enc === 'binary' || enc === 'ascii') {
      let s = '';
      for (let i = 0; i < this.length; i++) s += fromCharCode(enc === 'ascii' ? this[i] & 127 : this[i]);
      return s;
    }
    throw new TypeErrorCtor('Unknown encoding: ' + encoding);
  }
  toJSON(): { type: 'Buffer'; data: number[] } {
    const data: number[] = [];
    for (let i = 0; i < this.length; i++) put(data, i, this[i]);
    return { type: 'Buffer', data };
  }
}

export interface Attachment {
  content_type: string;
  file_name: string;
  contents: AttachmentContents;
}

/** meta.attachments from what the host copied in. */
export function buildAttachments(raw: GuestAttachment[]): Record<string, Attachment> {
  const attachments: Record<string, Attachment> = {};
  for (let i = 0; i < raw.length; i++) {
    const a = raw[i];
    const contents = new AttachmentContents(a.bytes.length);
    typedSet(contents, a.bytes);
    initContents(contents, a.utf8, a.base64);
    attachments[a.key] = { content_type: a.content_type, file_name: a.file_name, contents };
  }
  return attachments;
}
