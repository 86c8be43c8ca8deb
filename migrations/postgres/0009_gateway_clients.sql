-- Gateways (Envoy and the like) are clients of their own type: they call the rate limit service
-- over gRPC, and every call they make counts.
ALTER TABLE api_clients DROP CONSTRAINT api_clients_client_type_check;
ALTER TABLE api_clients ADD CONSTRAINT api_clients_client_type_check
    CHECK (client_type IN ('weweb', 'heimdall', 'tyr', 'script', 'integration', 'gateway'));
