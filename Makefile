# Convenience targets; each one is a script under scripts/ so a machine without make works too.
.PHONY: install run test test-slow clean
install: ; bash scripts/install.sh
run: ; bash scripts/run.sh
test: ; bash scripts/test.sh
test-slow: ; bash scripts/test.sh -m slow
clean: ; rm -rf .venv .metaflow outputs .pytest_cache
