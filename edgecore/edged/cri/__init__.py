"""The generated protobuf messages of the CRI ``runtime.v1`` subset Edged uses (see ``runtime_v1.proto``)."""
