-- Tenant-managed CAs (/v1/provisioning): the certificate and the private key, sealed with the
-- configured key (AES-256-GCM, nonce || ciphertext, bound to tenant and CA id).
CREATE TABLE tenant_cas (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    ca_id      TEXT NOT NULL,
    cert       BLOB NOT NULL,
    sealed_key BLOB NOT NULL,
    PRIMARY KEY (tenant_id, ca_id)
);
