/**
 * Generated with Python 3.11: for each JSON text (as JSON.stringify wrote it), repr(json.loads(text)).
 */
export const PY_REPR_CASES: Array<[string, string]> = [
  ["[2,2]", "[2, 2]"],
  ["{\"z\":3}", "{'z': 3}"],
  ["[\"it's\",\"say \\\"hi\\\"\",\"both ' \\\"\",\"tab\\tnl\\n\",\"\u00e9 \u00fc \ud83d\ude00\",\"\\u0000\u007f\u0085\u00a0\u2028\u200b\u3000\",\"back\\\\slash\",\"lone \\ud800 x\"]", "[\"it's\", 'say \"hi\"', 'both \\' \"', 'tab\\tnl\\n', '\u00e9 \u00fc \ud83d\ude00', '\\x00\\x7f\\x85\\xa0\\u2028\\u200b\\u3000', 'back\\\\slash', 'lone \\ud800 x']"],
  ["[0.1,0.00001,15000000000000000,1e+21,123.456,-2.5e-7,1.7976931348623157e+308,5e-324,100.25,0,0.0001,0.00015000000000000001,12345678.9,1000000000000000.5]", "[0.1, 1e-05, 15000000000000000, 1e+21, 123.456, -2.5e-07, 1.7976931348623157e+308, 5e-324, 100.25, 0, 0.0001, 0.00015000000000000001, 12345678.9, 1000000000000000.5]"],
  ["{\"nested\":{\"a\":[null,true,false]},\"distinct_id\":\"abc\",\"k'ey\":1}", "{'nested': {'a': [None, True, False]}, 'distinct_id': 'abc', \"k'ey\": 1}"],
];
