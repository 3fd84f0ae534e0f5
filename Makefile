# Convenience targets; the real declarations live in Cargo.toml
# ([package.metadata.deb]) and packaging/. Needs cargo-deb:
#   cargo install cargo-deb --version 3.8.0 --locked

.PHONY: deb deb-dev security install-cargo-deb

# The release package: target/debian/vpcbox_<version>-1_<arch>.deb
deb:
	cargo deb

# A quick package from the debug binary (what tests/it/package.rs builds);
# for trying the packaging, never for shipping.
deb-dev:
	cargo build --features cluster
	cargo deb --profile dev --no-build --fast --strip --quiet

# The unit's systemd-analyze exposure score (recorded in packaging/README.md).
security:
	systemd-analyze security --offline=true packaging/vpcbox.service

install-cargo-deb:
	command -v cargo-deb >/dev/null || cargo install cargo-deb --version 3.8.0 --locked
