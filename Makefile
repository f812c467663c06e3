# The two set-up commands (README.md): `make run` and `make test`.
.PHONY: run test lint build bench

run: ## Run the whole pipeline locally, in the foreground (Ctrl-C stops it).
	scripts/run.sh

test: ## Every test tier, against a real PostgreSQL and broker.
	scripts/test.sh

lint: ## Formatting and clippy, warnings as errors.
	cargo fmt --all -- --check
	cargo clippy --locked --workspace --all-targets -- -D warnings

build:
	cargo build --locked --workspace --bins
