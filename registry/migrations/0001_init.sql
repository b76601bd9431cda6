-- Initial schema: documents as JSON text plus the columns the database must keep unique.
CREATE TABLE tenants (
    id      TEXT PRIMARY KEY NOT NULL,
    version TEXT NOT NULL,
    alias   TEXT UNIQUE,
    doc     TEXT NOT NULL
);

-- A trusted CA subject DN belongs to one tenant only.
CREATE TABLE tenant_ca_subjects (
    subject_dn TEXT PRIMARY KEY NOT NULL,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE
);
CREATE INDEX tenant_ca_subjects_by_tenant ON tenant_ca_subjects (tenant_id);

CREATE TABLE devices (
    tenant_id           TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    device_id           TEXT NOT NULL,
    version             TEXT NOT NULL,
    credentials_version TEXT NOT NULL,
    doc                 TEXT NOT NULL,
    PRIMARY KEY (tenant_id, device_id)
);

-- (tenant, type, auth-id) identifies one credential of one device.
CREATE TABLE credentials (
    tenant_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    type      TEXT NOT NULL,
    auth_id   TEXT NOT NULL,
    doc       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, type, auth_id),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, device_id) ON DELETE CASCADE
);
CREATE INDEX credentials_by_device ON credentials (tenant_id, device_id);
