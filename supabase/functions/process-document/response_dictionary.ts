/**
 * Two made-up answers of this function, the dictionary its stored answers are compressed against
 * (`responseDictionaries`): a stored answer then keeps mostly its ids, hash, title and text, ~190 bytes for
 * a 510-byte answer instead of ~330 with brotli alone (docs/scaling.md, "Bytes per key").
 *
 * Never edit these bytes: stored answers name their dictionary by its checksum and decode only with the
 * same bytes. To change it, add a new dictionary in front in index.ts and keep this one listed for the keys'
 * TTL (24 h).
 */
export const RESPONSE_DICTIONARY_V1 =
  `{"document_id":"3f1c2a9e-7b4d-4e6a-9c21-5d8e0f6a7b3c","job_id":"8a2d4c6e-1f3b-4a5c-8d7e-9b0a1c2d3e4f",` +
  `"status":"completed","title":"Quarterly report: revenue, growth and the regional forecast",` +
  `"word_count":1843,"content_sha256":"9b2e6f1c4a7d0e3b8c5f2a9d6e1b4c7f0a3d8e5b2c9f6a1d4e7b0c3f8a5d2e9b",` +
  `"operations":["summary","keywords","statistics"],"result":{"summary":"The report covers the ` +
  `revenue, margin and pipeline of the quarter for each region; the items reviewed were the budget, ` +
  `the contracts and the invoices of the suppliers.","keywords":[{"word":"revenue","count":14},` +
  `{"word":"growth","count":11},{"word":"region","count":9},{"word":"forecast","count":7},` +
  `{"word":"customer","count":6}],"statistics":{"characters":11032,"words":1843,"sentences":97,` +
  `"avg_word_length":4.87}}}` +
  `{"document_id":"c7e4b1a8-5f2c-4d9e-b6a3-0e7f4c1d8a5b","job_id":"2b9f6c3e-0a7d-4b4e-a1f8-5c2d9e6b3a0f",` +
  `"status":"completed","title":"Contract renewal summary and compliance audit",` +
  `"word_count":612,"content_sha256":"4d1a8e5b2f9c6d3a0e7b4f1c8d5a2e9b6f3c0d7a4e1b8f5c2d9a6e3b0f7c4d1a",` +
  `"operations":["summary","keywords","statistics"],"result":{"summary":"This document is the summary ` +
  `of the contract renewal with the supplier and of the audit of its compliance, logistics and hiring.",` +
  `"keywords":[{"word":"contract","count":8},{"word":"renewal","count":6},{"word":"supplier","count":5},` +
  `{"word":"compliance","count":4},{"word":"audit","count":3}],"statistics":{"characters":3905,` +
  `"words":612,"sentences":31,"avg_word_length":5.12}}}`;
