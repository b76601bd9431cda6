-- Trust anchor groups: a CA subject DN may be trusted by several tenants when they share a
-- non-empty trust-anchor-group. The rows now carry the tenant's group; the registry checks,
-- inside the writing transaction, that every other tenant with the DN has the same group.
CREATE TABLE tenant_ca_subjects_grouped (
    subject_dn         TEXT NOT NULL,
    tenant_id          TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    trust_anchor_group TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (subject_dn, tenant_id)
);
INSERT INTO tenant_ca_subjects_grouped (subject_dn, tenant_id, trust_anchor_group)
    SELECT s.subject_dn, s.tenant_id,
           COALESCE(json_extract(t.doc, '$."trust-anchor-group"'), '')
    FROM tenant_ca_subjects s JOIN tenants t ON t.id = s.tenant_id;
DROP TABLE tenant_ca_subjects;
ALTER TABLE tenant_ca_subjects_grouped RENAME TO tenant_ca_subjects;
CREATE INDEX tenant_ca_subjects_by_tenant ON tenant_ca_subjects (tenant_id);

-- Ownership codes for claiming (JITP): only a salted hash (bcrypt), keyed by the subject DN
-- (RFC 2253) of the device certificate they were set for.
CREATE TABLE ownership_codes (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    subject_dn TEXT NOT NULL,
    code_hash  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, subject_dn)
);
