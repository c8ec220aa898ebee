package policy

import (
	"encoding/json"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// marshalInput encodes the request the way Kata's agent hands it to its
// policy: JSON with the proto field names and every field present.
func marshalInput(req any) ([]byte, error) {
	if m, ok := req.(proto.Message); ok && m != nil {
		return protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	}
	if req == nil {
		return []byte("{}"), nil
	}
	return json.Marshal(req)
}
