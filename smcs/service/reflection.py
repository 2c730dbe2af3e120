"""Server reflection in both versions: ``grpc.reflection.v1`` (what grpcurl, buf curl and Postman try first)
and ``grpc.reflection.v1alpha`` (what older tools use).

grpcio-reflection serves only v1alpha (grpc/grpc#38576). The v1 protocol is v1alpha's under another
package: the same messages, field for field, number for number, so the same bytes on the wire. v1 is
therefore served by grpcio-reflection's own servicer, registered a second time under the v1 method name
with v1alpha's (identical) serializers. So that v1 can be reflected on like any other service, the v1
file (``grpc/reflection/v1/reflection.proto``) is built from v1alpha's descriptor, renamed, and added to
the descriptor pool; ``V1_REQUEST`` and ``V1_RESPONSE`` are its message classes, for clients.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
from grpc_reflection.v1alpha import reflection as v1alpha
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

V1_PACKAGE = "grpc.reflection.v1"
V1_FILE = "grpc/reflection/v1/reflection.proto"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
V1ALPHA_SERVICE_NAME: str = v1alpha.SERVICE_NAME
METHOD = "ServerReflectionInfo"


def _v1_file(pool: descriptor_pool.DescriptorPool) -> None:
    """Add the v1 reflection file to ``pool`` (v1alpha's descriptor under v1's package), unless it has it."""
    try:
        pool.FindFileByName(V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    v1alpha_pb2.DESCRIPTOR.CopyToProto(proto)
    old = f".{proto.package}."
    proto.name, proto.package = V1_FILE, V1_PACKAGE
    proto.options.Clear()
    proto.options.java_package, proto.options.java_outer_classname = "io.grpc.reflection.v1", "ServerReflectionProto"
    proto.options.java_multiple_files = True
    proto.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # messages only: a scalar must not get an (empty) type name
                field.type_name = field.type_name.replace(old, f".{V1_PACKAGE}.")
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, f".{V1_PACKAGE}.")
            method.output_type = method.output_type.replace(old, f".{V1_PACKAGE}.")
    pool.Add(proto)


_v1_file(descriptor_pool.Default())
V1_REQUEST: type[Message] = message_factory.GetMessageClass(
    descriptor_pool.Default().FindMessageTypeByName(f"{V1_PACKAGE}.ServerReflectionRequest")
)
V1_RESPONSE: type[Message] = message_factory.GetMessageClass(
    descriptor_pool.Default().FindMessageTypeByName(f"{V1_PACKAGE}.ServerReflectionResponse")
)


def enable_server_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection v1 and v1alpha on ``server``, listing ``service_names`` and both reflection services."""
    names = (*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)
    servicer = v1alpha.aio.ReflectionServicer(names)
    for service in (V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME):
        handler = grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=v1alpha_pb2.ServerReflectionRequest.FromString,  # v1's bytes too
            response_serializer=v1alpha_pb2.ServerReflectionResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {METHOD: handler}),))
