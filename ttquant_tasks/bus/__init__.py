"""The bus: what crosses ZeroMQ.

``codec`` is pure (protobuf encode/decode, topics); ``zmq`` owns the sockets.  ``ttquant.proto`` is
the schema (WIRE.md); ``ttquant_pb2`` is generated from it with grpcio-tools::

    python -m grpc_tools.protoc -Ittquant_tasks/bus --python_out=ttquant_tasks/bus \
        --pyi_out=ttquant_tasks/bus ttquant_tasks/bus/ttquant.proto
"""
