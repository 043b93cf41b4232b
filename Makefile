# Convenience targets; each one is a script under scripts/ so a machine without make works too.
.PHONY: install run test test-slow clean deploy-argo deploy-sfn package-list run-k8s run-batch
install: ; bash scripts/install.sh
run: ; bash scripts/run.sh
test: ; bash scripts/test.sh
test-slow: ; bash scripts/test.sh -m slow
clean: ; rm -rf .venv .metaflow outputs .pytest_cache
# Scheduled cloud runs (README, "Scheduled cloud runs"); extra arguments: make deploy-argo ARGS=--production
deploy-argo: ; bash scripts/deploy.sh argo $(ARGS)
deploy-sfn: ; bash scripts/deploy.sh sfn $(ARGS)
package-list: ; bash scripts/deploy.sh package-list $(ARGS)
run-k8s: ; bash scripts/deploy.sh k8s-run $(ARGS)
run-batch: ; bash scripts/deploy.sh batch-run $(ARGS)
