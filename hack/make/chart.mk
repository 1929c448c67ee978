##@ Helm chart

HELM_VERSION ?= v3.22.0
HELM := $(BIN)/helm-$(HELM_VERSION)
CHART := charts/annshard

$(HELM):
	@mkdir -p $(BIN) $(ANNSHARD_CACHE)/helm-$(HELM_VERSION)
	@if [ ! -x $(ANNSHARD_CACHE)/helm-$(HELM_VERSION)/helm ]; then \
		echo "go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)"; \
		GOBIN=$(ANNSHARD_CACHE)/helm-$(HELM_VERSION) $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION); fi
	cp $(ANNSHARD_CACHE)/helm-$(HELM_VERSION)/helm $@.tmp && mv $@.tmp $@

.PHONY: helm
helm: $(HELM) ## Install helm into bin/.

.PHONY: chart-sync
chart-sync: ## Copy the generated CRD and RBAC rules into the chart.
	cp config/crd/bases/*.yaml $(CHART)/crds/
	sed '1,/^rules:/d' config/rbac/role.yaml > $(CHART)/files/manager-rules.yaml

.PHONY: test-chart
test-chart: $(HELM) ## Lint and render the chart (default and namespaced values); fail if it is out of sync.
	$(MAKE) --no-print-directory chart-sync
	@git diff --exit-code -- $(CHART) || { echo "charts/annshard is stale: run 'make chart-sync' and commit"; exit 1; }
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) --set watchNamespace=team-a --set metrics.serviceMonitor.enabled=true
	$(HELM) template annshard $(CHART) --namespace annshard-system > /dev/null
	$(HELM) template annshard $(CHART) --namespace annshard-system --set watchNamespace=team-a \
		--set metrics.serviceMonitor.enabled=true > /dev/null
	$(HELM) lint --strict $(CHART) --set dashboards.enabled=true
	$(HELM) template annshard $(CHART) --namespace annshard-system --set dashboards.enabled=true \
		--show-only templates/dashboard.yaml | grep -q 'grafana_dashboard: "1"'

TEST_TARGETS += test-chart
