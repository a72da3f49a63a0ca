/**
 * amqplib 0.10 cannot decode every field table py-amqp writes: py-amqp encodes integers beyond int32 with the
 * tag 'L' (signed 64-bit, RabbitMQ's errata naming), which amqplib does not know ("Unexpected type tag "L"").
 * The error is thrown while parsing the message's properties frame, so amqplib kills the whole connection; the
 * message goes back to the queue, is redelivered, and kills the next connection: a poison loop started by one
 * Python task with a large integer header (verified on this machine with kombu 5.2.4 → amqplib 0.10.9).
 *
 * Fix: replace `codec.decodeFields` before amqplib's `defs.js` captures it (it copies the function into a local
 * variable when first loaded). The replacement calls the original and only on failure falls back to a decoder that
 * knows every tag py-amqp and RabbitMQ use; if even that fails, it returns an empty table marked with
 * UNDECODABLE_TABLE so the broker can set the message aside instead of losing the connection.
 *
 * This module must be loaded before anything else requires amqplib; session.ts (the broker's only module that
 * loads amqplib) and amqp-broker.ts import it first.
 * `amqplibPatchState` tells whether that worked.
 */

/** Symbol key on a decoded table that could not be parsed: value {error, base64}. */
export const UNDECODABLE_TABLE = Symbol.for('posthog-plugins.amqp.undecodable-table');

export interface UndecodableTable {
  error: string;
  base64: string;
}

type Table = Record<string | symbol, unknown>;

/** Decodes an AMQP field table the way amqplib does, plus 'L' (int64), 'U' (int16) and other spec tags. */
export function decodeFieldTable(slice: Buffer): Table {
  let offset = 0;

  function value(): unknown {
    const tag = String.fromCharCode(slice[offset]!);
    offset += 1;
    let v: unknown;
    switch (tag) {
      case 'b': // amqplib and RabbitMQ: signed byte
        v = slice.readInt8(offset);
        offset += 1;
        break;
      case 'B':
        v = slice.readUInt8(offset);
        offset += 1;
        break;
      case 's': // RabbitMQ errata: signed 16-bit (never short string in a table)
      case 'U':
        v = slice.readInt16BE(offset);
        offset += 2;
        break;
      case 'u':
        v = slice.readUInt16BE(offset);
        offset += 2;
        break;
      case 'I':
        v = slice.readInt32BE(offset);
        offset += 4;
        break;
      case 'i':
        v = slice.readUInt32BE(offset);
        offset += 4;
        break;
      case 'l': // RabbitMQ errata: signed 64-bit
      case 'L': // py-amqp: signed 64-bit
        v = Number(slice.readBigInt64BE(offset));
        offset += 8;
        break;
      case 'f':
        v = slice.readFloatBE(offset);
        offset += 4;
        break;
      case 'd':
        v = slice.readDoubleBE(offset);
        offset += 8;
        break;
      case 'D': {
        const places = slice.readUInt8(offset);
        const digits = slice.readInt32BE(offset + 1);
        offset += 5;
        v = { '!': 'decimal', value: { places, digits } };
        break;
      }
      case 'T':
        v = { '!': 'timestamp', value: Number(slice.readBigUInt64BE(offset)) };
        offset += 8;
        break;
      case 't':
        v = slice[offset] !== 0;
        offset += 1;
        break;
      case 'V':
        v = null;
        break;
      case 'S': {
        const len = slice.readUInt32BE(offset);
        offset += 4;
        v = slice.toString('utf8', offset, offset + len);
        offset += len;
        break;
      }
      case 'x': {
        const len = slice.readUInt32BE(offset);
        offset += 4;
        v = Buffer.from(slice.subarray(offset, offset + len));
        offset += len;
        break;
      }
      case 'F': {
        const len = slice.readUInt32BE(offset);
        offset += 4;
        v = decodeFieldTable(slice.subarray(offset, offset + len));
        offset += len;
        break;
      }
      case 'A': {
        const len = slice.readUInt32BE(offset);
        offset += 4;
        const end = offset + len;
        const arr: unknown[] = [];
        while (offset < end) arr.push(value());
        v = arr;
        break;
      }
      default:
        throw new TypeError(`unknown AMQP field type tag "${tag}"`);
    }
    if (offset > slice.length) throw new RangeError('AMQP field table truncated');
    return v;
  }

  const out: Table = {};
  while (offset < slice.length) {
    const klen = slice.readUInt8(offset);
    offset += 1;
    const key = slice.toString('utf8', offset, offset + klen);
    offset += klen;
    out[key] = value();
  }
  return out;
}

export interface AmqplibPatchState {
  patched: boolean;
  reason?: string;
}

function install(): AmqplibPatchState {
  try {
    const defsPath = require.resolve('amqplib/lib/defs');
    if (require.cache[defsPath]) {
      return { patched: false, reason: 'amqplib was loaded before src/brokers/amqp/amqplib-compat' };
    }
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const codec = require('amqplib/lib/codec') as {
      decodeFields: (slice: Buffer) => Table;
      __posthogPatched?: boolean;
    };
    if (codec.__posthogPatched) return { patched: true };
    const original = codec.decodeFields;
    codec.decodeFields = function decodeFields(slice: Buffer): Table {
      try {
        return original(slice);
      } catch {
        try {
          return decodeFieldTable(slice);
        } catch (err) {
          const table: Table = {};
          const info: UndecodableTable = {
            error: (err as Error).message,
            base64: Buffer.from(slice).toString('base64'),
          };
          Object.defineProperty(table, UNDECODABLE_TABLE, { value: info, enumerable: false });
          return table;
        }
      }
    };
    codec.__posthogPatched = true;
    return { patched: true };
  } catch (err) {
    return { patched: false, reason: (err as Error).message };
  }
}

export const amqplibPatchState: AmqplibPatchState = install();
