// Package apitest holds the table of bad requests the public API must refuse, shared by
// the tests of the shard server and of the router so that both are held to the same
// rules and the same words (client/validate.go states the rules). It is test support,
// not part of a server.
package apitest

import (
	"fmt"
	"math"
	"net/http"
	"strings"

	"github.com/annshard/annshard/shardserver/client"
)

// Case is one bad request and the answer it must get: Status and Code, and a Message
// that contains Msg (the field and what is wrong with it).
type Case struct {
	Name, Method, Path, Body string
	Status                   int
	Code                     string
	Msg                      string
}

// Vector returns the JSON array of dim copies of v.
func Vector(dim int, v float32) string {
	parts := make([]string, dim)
	for i := range parts {
		parts[i] = fmt.Sprint(v)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// BadInput returns the table for an index of sc.Dimension under sc's limits (all of
// them set). The index holds a vector with the id "keep"; no case may change it.
func BadInput(sc client.Schema) []Case {
	dim := sc.Dimension
	good := Vector(dim, 0.5)
	b64 := func(v []float32) string { return `"` + client.EncodeB64(v) + `"` }
	withAt := func(i int, x float32) []float32 {
		v := make([]float32, dim)
		for j := range v {
			v[j] = 0.5
		}
		v[i] = x
		return v
	}
	comps := func(first string) string { // a vector whose first component is the text first
		return "[" + first + strings.Repeat(",0.5", dim-1) + "]"
	}
	upsert := func(item string) string { return `{"vectors":[` + item + `]}` }
	item := func(fields string) string { return upsert(`{` + fields + `}`) }
	search := func(fields string) string { return `{` + fields + `}` }
	repeat := func(n int, f func(i int) string) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = f(i)
		}
		return strings.Join(parts, ",")
	}
	long := strings.Repeat("x", client.MaxIDBytes+1)
	const bad, tooBig = http.StatusBadRequest, http.StatusRequestEntityTooLarge
	inv, big := client.CodeInvalidArgument, client.CodePayloadTooLarge
	vf := `"vector":` + good
	return []Case{
		// The body as a whole.
		{"empty body", "POST", "/v1/vectors", ``, bad, inv, "request body: empty"},
		{"malformed json", "POST", "/v1/vectors", `{"vectors":[`, bad, inv, "malformed JSON"},
		{"not an object", "POST", "/v1/vectors", `[1,2]`, bad, inv, "request body: want an object, got an array"},
		{"a string", "POST", "/v1/vectors", `"vectors"`, bad, inv, "request body: want an object, got a string"},
		{"two values", "POST", "/v1/vectors", upsert(`{"id":"z",`+vf+`}`) + ` {}`, bad, inv, "malformed JSON"},
		{"trailing garbage", "POST", "/v1/search", search(vf+`,"k":1`) + `x`, bad, inv, "malformed JSON"},
		{"null body", "POST", "/v1/vectors", `null`, bad, inv, "vectors: empty batch"},
		{"body over limit", "POST", "/v1/vectors", item(`"id":"` + strings.Repeat("y", int(sc.MaxBodyBytes)) + `"`), tooBig, big, "request body over"},
		{"search body over limit", "POST", "/v1/search", search(`"partition":"` + strings.Repeat("y", int(sc.MaxBodyBytes)) + `"`), tooBig, big, "request body over"},
		// Fields: unknown, duplicated, in another case, of the wrong type.
		{"unknown field", "POST", "/v1/vectors", item(`"id":"z",` + vf + `,"color":1`), bad, inv, `vectors[0]: unknown field "color"`},
		{"unknown top field", "POST", "/v1/vectors", `{"vectors":[],"x":1}`, bad, inv, `request body: unknown field "x"`},
		{"unknown nested garbage", "POST", "/v1/vectors", item(`"id":"z",` + vf + `,"meta":{"a":[[[{"b":null}]]]}`), bad, inv, `vectors[0]: unknown field "meta"`},
		{"key in another case", "POST", "/v1/vectors", `{"Vectors":[{"id":"z",` + vf + `}]}`, bad, inv, `unknown field "Vectors"`},
		{"duplicate key", "POST", "/v1/vectors", item(`"id":"z","id":"y",` + vf), bad, inv, `vectors[0]: duplicate field "id"`},
		{"duplicate top key", "POST", "/v1/vectors", `{"vectors":[],"vectors":[{"id":"z",` + vf + `}]}`, bad, inv, `request body: duplicate field "vectors"`},
		{"vectors an object", "POST", "/v1/vectors", `{"vectors":{"id":"z"}}`, bad, inv, "vectors: want an array of objects, got an object"},
		{"vector a string", "POST", "/v1/vectors", item(`"id":"z","vector":"0.5,0.5"`), bad, inv, "vectors[0].vector: want an array of numbers, got a string"},
		{"vector an object", "POST", "/v1/vectors", item(`"id":"z","vector":{"0":0.5}`), bad, inv, "vectors[0].vector: want an array of numbers, got an object"},
		{"vector nested", "POST", "/v1/vectors", item(`"id":"z","vector":[` + good + `]`), bad, inv, "vectors[0].vector[0]: want a number, got an array"},
		{"string component", "POST", "/v1/vectors", item(`"id":"z","vector":` + comps(`"a"`)), bad, inv, "vectors[0].vector[0]: want a number, got a string"},
		{"null component", "POST", "/v1/vectors", item(`"id":"z","vector":` + comps(`null`)), bad, inv, "vectors[0].vector[0]: want a number, got null"},
		{"id a number", "POST", "/v1/vectors", item(`"id":12,` + vf), bad, inv, "vectors[0].id: want a string, got a number"},
		{"k a string", "POST", "/v1/search", search(vf + `,"k":"5"`), bad, inv, "k: want an integer, got a string"},
		{"allowPartial a string", "POST", "/v1/search", search(vf + `,"k":1,"allowPartial":"yes"`), bad, inv, "allowPartial: want true or false, got a string"},
		{"ids a string", "POST", "/v1/vectors:delete", `{"ids":"keep"}`, bad, inv, "ids: want an array of strings, got a string"},
		// Numbers.
		{"float32 overflow", "POST", "/v1/vectors", item(`"id":"z","vector":` + comps(`1e39`)), bad, inv, `vectors[0].vector[0]: "1e39" is out of float32 range`},
		{"float32 overflow negative", "POST", "/v1/vectors", item(`"id":"z","vector":` + comps(`-3.5e38`)), bad, inv, `vectors[0].vector[0]: "-3.5e38" is out of float32 range`},
		{"huge exponent", "POST", "/v1/vectors", item(`"id":"z","vector":` + comps(`1e999999`)), bad, inv, `vectors[0].vector[0]: "1e999999" is out of float32 range`},
		{"search float32 overflow", "POST", "/v1/search", search(`"vector":` + comps(`1e39`) + `,"k":1`), bad, inv, `vector[0]: "1e39" is out of float32 range`},
		{"batch search overflow", "POST", "/v1/search:batch", `{"queries":[{` + vf + `,"k":1},{"vector":` + comps(`1e39`) + `,"k":1}]}`, bad, inv, `queries[1].vector[0]: "1e39" is out of float32 range`},
		{"NaN literal", "POST", "/v1/vectors", item(`"id":"z","vector":` + comps(`NaN`)), bad, inv, "vectors[0].vector[0]: malformed JSON"},
		{"Infinity literal", "POST", "/v1/search", search(`"vector":` + comps(`Infinity`) + `,"k":1`), bad, inv, "vector[0]: malformed JSON"},
		{"plus sign", "POST", "/v1/vectors", item(`"id":"z","vector":` + comps(`+1`)), bad, inv, "malformed JSON"},
		{"leading zero", "POST", "/v1/search", search(`"vector":` + comps(`01`) + `,"k":1`), bad, inv, "malformed JSON"},
		{"hex number", "POST", "/v1/vectors", item(`"id":"z","vector":` + comps(`0x10`)), bad, inv, "malformed JSON"},
		{"k fraction", "POST", "/v1/search", search(vf + `,"k":1.5`), bad, inv, `k: "1.5" is not an integer in range`},
		{"k huge", "POST", "/v1/search", search(vf + `,"k":1e20`), bad, inv, `k: "1e20" is not an integer in range`},
		{"k over int64", "POST", "/v1/search", search(vf + `,"k":99999999999999999999`), bad, inv, `k: "99999999999999999999" is not an integer in range`},
		{"infinite b64", "POST", "/v1/vectors", item(`"id":"z","vector_b64":` + b64(withAt(3, float32(math.Inf(1))))), bad, inv, "vectors[0].vector: component 3 is +Inf"},
		{"nan b64", "POST", "/v1/vectors", item(`"id":"z","vector_b64":` + b64(withAt(0, float32(math.NaN())))), bad, inv, "vectors[0].vector: component 0 is NaN"},
		{"search nan b64", "POST", "/v1/search", search(`"vector_b64":` + b64(withAt(1, float32(math.NaN()))) + `,"k":1`), bad, inv, "vector: component 1 is NaN"},
		{"squared length overflows", "POST", "/v1/vectors", item(`"id":"z","vector":` + comps(`1e19`)), bad, inv, "vectors[0].vector: squared length"},
		// Vectors: shape.
		{"wrong dimension", "POST", "/v1/vectors", item(`"id":"z","vector":[1,2,3]`), bad, inv, fmt.Sprintf("vectors[0].vector: the vector has dimension 3, the index has %d", dim)},
		{"wrong dimension b64", "POST", "/v1/vectors", item(`"id":"z","vector_b64":` + b64([]float32{1, 2})), bad, inv, fmt.Sprintf("vectors[0].vector: the vector has dimension 2, the index has %d", dim)},
		{"search wrong dimension", "POST", "/v1/search", search(`"vector":[1,2],"k":1`), bad, inv, fmt.Sprintf("vector: the vector has dimension 2, the index has %d", dim)},
		{"search wrong dimension b64", "POST", "/v1/search", search(`"vector_b64":` + b64([]float32{1, 2}) + `,"k":1`), bad, inv, fmt.Sprintf("vector: the vector has dimension 2, the index has %d", dim)},
		{"empty vector", "POST", "/v1/vectors", item(`"id":"z","vector":[]`), bad, inv, fmt.Sprintf("vectors[0].vector: the vector has dimension 0, the index has %d", dim)},
		{"search empty vector", "POST", "/v1/search", search(`"vector":[],"k":1`), bad, inv, fmt.Sprintf("vector: the vector has dimension 0, the index has %d", dim)},
		{"missing vector", "POST", "/v1/vectors", item(`"id":"z"`), bad, inv, "vectors[0].vector: missing"},
		{"null vector", "POST", "/v1/vectors", item(`"id":"z","vector":null`), bad, inv, "vectors[0].vector: missing"},
		{"search missing vector", "POST", "/v1/search", search(`"k":1`), bad, inv, "vector: missing"},
		{"both forms", "POST", "/v1/vectors", item(`"id":"z",` + vf + `,"vector_b64":` + b64(withAt(0, 1))), bad, inv, "vectors[0].vector: give vector or vector_b64, not both"},
		{"bad base64", "POST", "/v1/vectors", item(`"id":"z","vector_b64":"@@@@"`), bad, inv, "vectors[0].vector_b64: illegal base64"},
		{"base64 not whole floats", "POST", "/v1/search", search(`"vector_b64":"AAAAAAAA","k":1`), bad, inv, "vector_b64: 6 bytes is not a whole number of float32s"},
		{"one bad in batch", "POST", "/v1/vectors", upsert(`{"id":"ok1",` + vf + `},{"id":"bad","vector":[1]}`), bad, inv, "vectors[1].vector: the vector has dimension 1"},
		{"mixed dimensions", "POST", "/v1/vectors", upsert(`{"id":"a","vector":[1,2]},{"id":"b","vector":[1,2,3]}`), bad, inv, "vectors[0].vector: the vector has dimension 2"},
		// Ids and partitions.
		{"empty id", "POST", "/v1/vectors", item(`"id":"",` + vf), bad, inv, "vectors[0].id: empty"},
		{"missing id", "POST", "/v1/vectors", item(vf), bad, inv, "vectors[0].id: empty"},
		{"long id", "POST", "/v1/vectors", item(`"id":"` + long + `",` + vf), bad, inv, fmt.Sprintf("vectors[0].id: %d bytes, the limit is %d", client.MaxIDBytes+1, client.MaxIDBytes)},
		{"whitespace id", "POST", "/v1/vectors", item(`"id":"   ",` + vf), bad, inv, "vectors[0].id: only whitespace"},
		{"control character id", "POST", "/v1/vectors", item(`"id":"a\u0001b",` + vf), bad, inv, "vectors[0].id: control character U+0001 at byte 1"},
		{"NUL in id", "POST", "/v1/vectors", item(`"id":"a\u0000",` + vf), bad, inv, "vectors[0].id: control character U+0000"},
		{"newline id", "POST", "/v1/vectors", item(`"id":"a\n",` + vf), bad, inv, "vectors[0].id: control character U+000A"},
		{"raw control character", "POST", "/v1/vectors", item("\"id\":\"a\tb\"," + vf), bad, inv, "vectors[0].id: malformed JSON"},
		{"invalid UTF-8 id", "POST", "/v1/vectors", item("\"id\":\"a\xffb\"," + vf), bad, inv, "vectors[0].id: malformed JSON"},
		{"lone surrogate id", "POST", "/v1/vectors", item(`"id":"a\ud800",` + vf), bad, inv, "vectors[0].id: malformed JSON"},
		{"duplicate id", "POST", "/v1/vectors", upsert(`{"id":"z",` + vf + `},{"id":"z",` + vf + `}`), bad, inv, `vectors[1].id: "z" repeats vectors[0].id`},
		{"long partition", "POST", "/v1/vectors", item(`"id":"z","partition":"` + long + `",` + vf), bad, inv, "vectors[0].partition: 257 bytes"},
		{"whitespace partition", "POST", "/v1/vectors", item(`"id":"z","partition":" \u00a0 ",` + vf), bad, inv, "vectors[0].partition: only whitespace"},
		{"control character partition", "POST", "/v1/vectors", item(`"id":"z","partition":"p\u007f",` + vf), bad, inv, "vectors[0].partition: control character U+007F"},
		{"search whitespace partition", "POST", "/v1/search", search(vf + `,"k":1,"partition":"  "`), bad, inv, "partition: only whitespace"},
		{"search long partition", "POST", "/v1/search", search(vf + `,"k":1,"partition":"` + long + `"`), bad, inv, "partition: 257 bytes"},
		{"get control character id", "GET", "/v1/vectors/a%01b", ``, bad, inv, "id: control character U+0001"},
		{"get invalid UTF-8 id", "GET", "/v1/vectors/a%FFb", ``, bad, inv, "id: not valid UTF-8 at byte 1"},
		{"get whitespace id", "GET", "/v1/vectors/%20%20", ``, bad, inv, "id: only whitespace"},
		{"get long id", "GET", "/v1/vectors/" + long, ``, bad, inv, "id: 257 bytes"},
		{"get whitespace partition", "GET", "/v1/vectors/keep?partition=%20", ``, bad, inv, "partition: only whitespace"},
		{"delete one long id", "DELETE", "/v1/vectors/" + long, ``, bad, inv, "id: 257 bytes"},
		{"delete one control partition", "DELETE", "/v1/vectors/keep?partition=a%0Ab", ``, bad, inv, "partition: control character U+000A"},
		// Query strings, paths and methods.
		{"misspelt query parameter", "GET", "/v1/vectors/keep?partiton=a", ``, bad, inv, `query string: unknown parameter "partiton"`},
		{"repeated partition", "GET", "/v1/vectors/keep?partition=a&partition=b", ``, bad, inv, "partition: given 2 times in the query string"},
		{"delete one repeated partition", "DELETE", "/v1/vectors/keep?partition=&partition=", ``, bad, inv, "partition: given 2 times"},
		{"bad query escape", "GET", "/v1/vectors/keep?partition=%zz", ``, bad, inv, "query string: invalid URL escape"},
		{"search query parameter", "POST", "/v1/search?k=5", search(vf + `,"k":1`), bad, inv, `query string: unknown parameter "k"`},
		{"upsert query parameter", "POST", "/v1/vectors?dryRun=true", item(`"id":"z",` + vf), bad, inv, `query string: unknown parameter "dryRun"`},
		{"wrong method", "PUT", "/v1/vectors", item(`"id":"z",` + vf), http.StatusMethodNotAllowed, client.CodeMethodNotAllowed, "PUT /v1/vectors: not allowed, use POST"},
		{"GET a search", "GET", "/v1/search", ``, http.StatusMethodNotAllowed, client.CodeMethodNotAllowed, "GET /v1/search: not allowed, use POST"},
		{"PATCH a vector", "PATCH", "/v1/vectors/keep", `{}`, http.StatusMethodNotAllowed, client.CodeMethodNotAllowed, "not allowed, use GET or DELETE"},
		{"unknown path", "POST", "/v1/vector", item(`"id":"z",` + vf), http.StatusNotFound, client.CodeNotFound, "no such endpoint: POST /v1/vector"},
		// Batches and limits.
		{"empty batch", "POST", "/v1/vectors", `{"vectors":[]}`, bad, inv, "vectors: empty batch"},
		{"batch too big", "POST", "/v1/vectors", upsert(repeat(sc.MaxBatch+1, func(i int) string { return fmt.Sprintf(`{"id":"m%d",%s}`, i, vf) })), bad, inv, fmt.Sprintf("vectors: %d in one batch, the limit is %d", sc.MaxBatch+1, sc.MaxBatch)},
		{"delete empty", "POST", "/v1/vectors:delete", `{"ids":[]}`, bad, inv, "ids: empty batch"},
		{"delete empty id", "POST", "/v1/vectors:delete", `{"ids":["keep",""]}`, bad, inv, "ids[1]: empty"},
		{"delete long id", "POST", "/v1/vectors:delete", `{"ids":["keep","` + long + `"]}`, bad, inv, "ids[1]: 257 bytes"},
		{"delete control id", "POST", "/v1/vectors:delete", `{"ids":["keep","\u001b[31m"]}`, bad, inv, "ids[1]: control character U+001B"},
		{"delete whitespace partition", "POST", "/v1/vectors:delete", `{"ids":["keep"],"partition":" "}`, bad, inv, "partition: only whitespace"},
		{"delete too many", "POST", "/v1/vectors:delete", `{"ids":[` + repeat(sc.MaxBatch+1, func(i int) string { return fmt.Sprintf(`"m%d"`, i) }) + `]}`, bad, inv, "ids: " + fmt.Sprint(sc.MaxBatch+1) + " in one batch"},
		{"delete unknown field", "POST", "/v1/vectors:delete", `{"ids":["keep"],"all":true}`, bad, inv, `request body: unknown field "all"`},
		{"search k 0", "POST", "/v1/search", search(vf + `,"k":0`), bad, inv, fmt.Sprintf("k: 0, want 1..%d", sc.MaxK)},
		{"search k missing", "POST", "/v1/search", search(vf), bad, inv, fmt.Sprintf("k: 0, want 1..%d", sc.MaxK)},
		{"search k over", "POST", "/v1/search", search(vf + fmt.Sprintf(`,"k":%d`, sc.MaxK+1)), bad, inv, fmt.Sprintf("k: %d, want 1..%d", sc.MaxK+1, sc.MaxK)},
		{"search k negative", "POST", "/v1/search", search(vf + `,"k":-1`), bad, inv, "k: -1, want 1.."},
		{"search ef over", "POST", "/v1/search", search(vf + fmt.Sprintf(`,"k":1,"ef":%d`, sc.MaxEf+1)), bad, inv, fmt.Sprintf("ef: %d, want 0 (the default) up to %d", sc.MaxEf+1, sc.MaxEf)},
		{"search ef negative", "POST", "/v1/search", search(vf + `,"k":1,"ef":-5`), bad, inv, "ef: -5, want 0 (the default)"},
		{"search unknown field", "POST", "/v1/search", search(vf + `,"k":1,"topk":3`), bad, inv, `request body: unknown field "topk"`},
		{"search duplicate k", "POST", "/v1/search", search(`"k":1,` + vf + `,"k":2`), bad, inv, `request body: duplicate field "k"`},
		{"search malformed", "POST", "/v1/search", `{"vector":`, bad, inv, "malformed JSON"},
		{"batch search empty", "POST", "/v1/search:batch", `{"queries":[]}`, bad, inv, "queries: empty batch"},
		{"batch search too many", "POST", "/v1/search:batch", `{"queries":[` + repeat(sc.MaxBatch+1, func(int) string { return `{` + vf + `,"k":1}` }) + `]}`, bad, inv, "queries: " + fmt.Sprint(sc.MaxBatch+1) + " in one batch"},
		{"batch search one bad", "POST", "/v1/search:batch", `{"queries":[{` + vf + `,"k":1},{` + vf + `,"k":0}]}`, bad, inv, "queries[1].k: 0, want 1.."},
		{"batch search unknown field", "POST", "/v1/search:batch", `{"queries":[{` + vf + `,"k":1,"x":1}]}`, bad, inv, `queries[0]: unknown field "x"`},
	}
}
