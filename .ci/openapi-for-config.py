#!/usr/bin/env python3
"""docs/openapi.yaml for one deployment: the values the generic document can only describe
("a tenant of [[tenants]]", "a service of [[gms.services]]", "an instance's alias",
"one of email.mailboxes")
become enums read from the gateway's config file, so that a schema-valid request is one
this deployment accepts. Used by .ci/schemathesis.sh for the strict (`--checks all`) run.

usage: openapi-for-config.py DOC CONFIG > OUT
"""
import json
import sys
import tomllib

import yaml


def main():
    doc_path, config_path = sys.argv[1], sys.argv[2]
    doc = yaml.safe_load(open(doc_path))
    config = tomllib.load(open(config_path, "rb"))
    tenants = [t["name"] for t in config.get("tenants", [])]
    services = [s["name"] for s in config.get("gms", {}).get("services", [])]
    email = config.get("email", {})
    mailboxes = list(email.get("mailboxes", []))
    # The default mailbox: `email.mailbox`, else the backend's `default_mailbox`.
    backend = email.get("backend", {})
    default = email.get("mailbox") or next(
        (t["default_mailbox"] for t in backend.values() if isinstance(t, dict) and t.get("default_mailbox")),
        None,
    )
    if default:
        mailboxes.append(default)
    if not tenants or not services:
        sys.exit(f"{config_path}: no [[tenants]] or no [[gms.services]]")

    aliases = [str(i["alias"]) for i in config.get("chat", {}).get("instances", [])]
    schemas = doc["components"]["schemas"]

    def pin(schema, field, values):
        for part in [schema] + schema.get("allOf", []):
            prop = part.get("properties", {}).get(field)
            if prop is not None and "$ref" not in prop:
                prop["enum"] = values

    for name in ("RequestChat", "Credentials", "SendEmail"):
        pin(schemas[name], "tenantName", tenants)
    # A chat's alias is one of the instances' (a wrong one is refused before any backend).
    pin(schemas["Credentials"], "alias", aliases)
    for name in ("GmsCredentials", "GmsFileUpload"):
        pin(schemas[name], "alias", aliases)
    # Absent or empty: the default mailbox; otherwise one of the configured ones.
    for name in ("EmailFields", "SendEmail", "GmsSendEmail"):
        pin(schemas[name], "mailbox", [""] + mailboxes)
    max_files = email.get("max_files", 10)
    for name in ("SendEmail", "GmsSendEmail"):
        schemas[name]["properties"]["files"]["maxItems"] = max_files
    doc["components"]["parameters"]["GmsService"]["schema"]["enum"] = services
    json.dump(doc, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
