// Unit tests of the broker URL masking shared by the Redis and AMQP brokers (no services needed).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { maskPassword } from '../../src/brokers/mask-password';

describe('maskPassword', () => {
  it("replaces the password with kombu's ** and keeps the rest as written", () => {
    assert.equal(maskPassword('amqp://guest:guest@127.0.0.1:5672//'), 'amqp://guest:**@127.0.0.1:5672//');
    assert.equal(
      maskPassword('amqp://us%40er:pw@host:1234/v%20h?heartbeat=30'),
      'amqp://us%40er:**@host:1234/v%20h?heartbeat=30',
    );
  });

  it('takes another mask (Redis URLs show ***)', () => {
    assert.equal(maskPassword('redis://:s3cret@redis.example:6379/0', '***'), 'redis://:***@redis.example:6379/0');
    assert.equal(
      maskPassword('rediss://user:p%40ss@h:6380/2?ssl_cert_reqs=none', '***'),
      'rediss://user:***@h:6380/2?ssl_cert_reqs=none',
    );
  });

  it('masks up to the last @ of the authority, a raw @ in the password included', () => {
    assert.equal(maskPassword('redis://u:p@ss@h:6379/0'), 'redis://u:**@h:6379/0');
  });

  it('leaves a URL without a password alone', () => {
    assert.equal(maskPassword('amqp://a@b:1/'), 'amqp://a@b:1/');
    assert.equal(maskPassword('redis://127.0.0.1:6379/0'), 'redis://127.0.0.1:6379/0');
    assert.equal(maskPassword('redis://h/0?password=x@y'), 'redis://h/0?password=x@y');
    assert.equal(maskPassword('not a url'), 'not a url');
  });
});
