-- Stored bodies may be `zdict`: zlib (RFC 1950) compressed against one of the function's response
-- dictionaries (the `responseDictionaries` option), which the body's header names by its Adler-32. A
-- 510-byte `process-document` answer is stored in ~190 bytes instead of ~330 with brotli, which brings a key
-- under 700 bytes at 10 M keys (docs/scaling.md, "Bytes per key").
--
-- Only the check on `response_encoding` changes. It is replaced NOT VALID, as 20261130000600 did: every
-- existing row meets the narrower check it replaces, and validating would read the whole table under a lock.
-- A catalog change, held for an instant.

set local lock_timeout = '5s';
set local statement_timeout = '1min';

alter table public.idempotency_keys drop constraint if exists idempotency_keys_encoding_valid;
alter table public.idempotency_keys add constraint idempotency_keys_encoding_valid
  check (response_encoding in ('identity', 'gzip', 'br', 'zdict')) not valid;
comment on column public.idempotency_keys.response_encoding is
  'How response is stored: identity (as sent), gzip, br (brotli), or zdict (zlib with a preset dictionary, '
  'named by its Adler-32 in the zlib header: one of the function''s responseDictionaries).';
