// deploy-check validates pgrunbook's deployment artifacts without a Docker engine or a cluster
// (scripts/check-deploy.sh builds it into .tools/bin and runs it):
//
//	deploy-check compose --project-dir DIR --env-file FILE [--file docker-compose.yml]
//	deploy-check dockerfile --context DIR [--file Dockerfile]
//	deploy-check k8s-schemas --from DIR --out DIR CRD.yaml...
//	deploy-check promrule --rule FILE --alerts FILE --out FILE
//
// Every problem is printed as one line "FILE: problem"; the exit code is 1 when there was any.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/patternmatcher"
	"sigs.k8s.io/yaml"
)

type problems struct{ list []string }

func (p *problems) add(file, format string, args ...any) {
	p.list = append(p.list, fmt.Sprintf("%s: %s", file, fmt.Sprintf(format, args...)))
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: deploy-check compose|dockerfile|k8s-schemas|promrule [options]")
		os.Exit(2)
	}
	var p problems
	var err error
	switch os.Args[1] {
	case "compose":
		err = checkCompose(os.Args[2:], &p)
	case "dockerfile":
		err = checkDockerfile(os.Args[2:], &p)
	case "k8s-schemas":
		err = buildK8sSchemas(os.Args[2:])
	case "promrule":
		err = checkPrometheusRule(os.Args[2:], &p)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "deploy-check %s: %v\n", os.Args[1], err)
		os.Exit(2)
	}
	for _, line := range p.list {
		fmt.Println(line)
	}
	if len(p.list) > 0 {
		fmt.Printf("deploy-check %s: %d problem(s)\n", os.Args[1], len(p.list))
		os.Exit(1)
	}
}

// flags parses "--name value" pairs and positional arguments.
func flags(args []string, known ...string) (map[string]string, []string, error) {
	values := map[string]string{}
	var rest []string
	for i := 0; i < len(args); i++ {
		if !strings.HasPrefix(args[i], "--") {
			rest = append(rest, args[i])
			continue
		}
		name := strings.TrimPrefix(args[i], "--")
		ok := false
		for _, k := range known {
			ok = ok || k == name
		}
		if !ok || i+1 >= len(args) {
			return nil, nil, fmt.Errorf("unknown option or missing value: %s", args[i])
		}
		values[name] = args[i+1]
		i++
	}
	return values, rest, nil
}

// ---- compose ---------------------------------------------------------------------------------

// What each image is known to contain, for healthcheck commands. From the images' Dockerfiles:
// postgres (Debian, PostgreSQL client tools); temporalio/server and temporalio/ui (alpine:
// busybox nc and wget); temporalio/admin-tools (temporal CLI, temporal-sql-tool, busybox);
// chrislusf/seaweedfs (alpine, busybox); pgrunbook (./Dockerfile: node on the node image).
var imageCommands = map[string][]string{
	"postgres":               {"pg_isready", "psql", "sh", "bash"},
	"temporalio/server":      {"nc", "wget", "sh", "temporal-server"},
	"temporalio/ui":          {"nc", "wget", "sh"},
	"temporalio/admin-tools": {"nc", "wget", "sh", "temporal", "temporal-sql-tool"},
	"chrislusf/seaweedfs":    {"nc", "wget", "sh", "weed"},
	"pgrunbook":              {"node", "pgrunbook", "sh", "bash", "pg_isready"},
}

var variableRef = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)|\$([A-Za-z_][A-Za-z0-9_]*)`)

func checkCompose(args []string, p *problems) error {
	opts, _, err := flags(args, "project-dir", "env-file", "file")
	if err != nil {
		return err
	}
	dir, envFile := opts["project-dir"], opts["env-file"]
	file := opts["file"]
	if file == "" {
		file = "docker-compose.yml"
	}
	if dir == "" || envFile == "" {
		return fmt.Errorf("--project-dir and --env-file are required")
	}
	composePath := filepath.Join(dir, file)
	raw, err := os.ReadFile(composePath)
	if err != nil {
		return err
	}
	env, err := readEnvFile(envFile)
	if err != nil {
		return err
	}

	// Every ${VAR} of the compose file is listed in the env file, and every listed one is used.
	used := map[string]bool{}
	for _, m := range variableRef.FindAllStringSubmatch(string(raw), -1) {
		name := m[1] + m[2]
		if name != "" {
			used[name] = true
		}
	}
	for _, name := range sortedKeys(used) {
		if _, ok := env[name]; !ok {
			p.add(envFile, "%s is used by %s but not listed", name, file)
		}
	}
	for _, name := range sortedKeys(env) {
		if !used[name] {
			p.add(envFile, "%s is listed but %s does not use it", name, file)
		}
	}

	// Load as `docker compose` does: the compose-spec JSON schema, interpolation from the env
	// file only (not this machine's environment), normalization and the consistency checks
	// (depends_on targets, volumes and networks declared).
	environment := []string{}
	for k, v := range env {
		environment = append(environment, k+"="+v)
	}
	options, err := cli.NewProjectOptions([]string{composePath},
		cli.WithWorkingDirectory(dir),
		cli.WithEnv(environment),
		cli.WithName("pgrunbook-check"),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		return err
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		p.add(composePath, "compose-spec: %v", err)
		return nil
	}

	var rawDoc struct {
		Services map[string]map[string]any `json:"services"`
	}
	if err := yaml.Unmarshal(raw, &rawDoc); err != nil {
		return err
	}
	completedBy := map[string]bool{}
	for _, svc := range project.Services {
		for dep, d := range svc.DependsOn {
			if d.Condition == types.ServiceConditionCompletedSuccessfully {
				completedBy[dep] = true
			}
		}
	}
	for _, name := range sortedKeys(project.Services) {
		svc := project.Services[name]
		where := fmt.Sprintf("%s: service %s", composePath, name)
		// depends_on in the long form with an explicit condition (the short form means "started").
		if deps, ok := rawDoc.Services[name]["depends_on"]; ok {
			if m, isMap := deps.(map[string]any); !isMap {
				p.add(where, "depends_on must be the long form with a condition for each service")
			} else {
				for dep, v := range m {
					if c, _ := v.(map[string]any)["condition"].(string); c == "" {
						p.add(where, "depends_on %s has no condition", dep)
					}
				}
			}
		}
		oneShot := completedBy[name] || strings.HasPrefix(string(svc.Restart), "on-failure") && len(svc.Ports) == 0
		if svc.HealthCheck == nil || svc.HealthCheck.Disable || len(svc.HealthCheck.Test) == 0 {
			if !oneShot {
				p.add(where, "long-running service without a healthcheck")
			}
		} else {
			checkHealthcheckCommand(p, where, svc)
		}
		if svc.Restart == "" {
			p.add(where, "no restart policy")
		}
		for _, v := range svc.Volumes {
			switch v.Type {
			case types.VolumeTypeVolume:
				if v.Source == "" {
					p.add(where, "anonymous volume at %s: use a named volume", v.Target)
				}
			case types.VolumeTypeBind:
				if _, err := os.Stat(v.Source); err != nil {
					p.add(where, "bind mount source %s does not exist", v.Source)
				}
				if !v.ReadOnly {
					p.add(where, "bind mount %s is writable: mount config and scripts read-only (:ro)", v.Target)
				}
			}
		}
		if svc.Build != nil {
			df := filepath.Join(svc.Build.Context, svc.Build.Dockerfile)
			if _, err := os.Stat(df); err != nil {
				p.add(where, "build Dockerfile %s does not exist", df)
			}
		}
		for k, v := range svc.Environment {
			if v != nil && looksLikeSecretValue(k, *v, env) {
				p.add(where, "environment %s has a literal secret; take it from .env (${VAR})", k)
			}
		}
	}
	return nil
}

// looksLikeSecretValue: a PASSWORD/SECRET/KEY variable whose value did not come from the env file.
func looksLikeSecretValue(key, value string, env map[string]string) bool {
	upper := strings.ToUpper(key)
	if !(strings.Contains(upper, "PASSWORD") || strings.Contains(upper, "SECRET") || strings.HasSuffix(upper, "_PWD")) {
		return false
	}
	for _, v := range env {
		if v == value {
			return false
		}
	}
	return true
}

func checkHealthcheckCommand(p *problems, where string, svc types.ServiceConfig) {
	test := svc.HealthCheck.Test
	var command string
	switch test[0] {
	case "CMD":
		if len(test) > 1 {
			command = test[1]
		}
	case "CMD-SHELL":
		if len(test) > 1 {
			command = strings.Fields(test[1])[0]
		}
	default:
		p.add(where, "healthcheck test must start with CMD or CMD-SHELL, got %q", test[0])
		return
	}
	image := svc.Image
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	known, ok := imageCommands[image]
	if !ok {
		p.add(where, "image %s: unknown which commands it has; add it to deploy-check's imageCommands", svc.Image)
		return
	}
	for _, c := range known {
		if c == command {
			return
		}
	}
	p.add(where, "healthcheck runs %q, which image %s does not have (it has %s)", command, image, strings.Join(known, ", "))
}

func readEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	env := map[string]string{}
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		line := strings.TrimSpace(scanner.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s: not KEY=VALUE: %q", path, line)
		}
		env[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return env, scanner.Err()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ---- Dockerfile --------------------------------------------------------------------------------

type instruction struct {
	line int
	cmd  string
	args string
}

func parseDockerfile(text string) []instruction {
	var out []instruction
	var current strings.Builder
	start := 0
	lines := strings.Split(text, "\n")
	for i, line := range lines {
		trimmed := strings.TrimSpace(line)
		if current.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if current.Len() > 0 && strings.HasPrefix(trimmed, "#") {
			continue // comment lines inside a continued instruction
		}
		if current.Len() == 0 {
			start = i + 1
		}
		if strings.HasSuffix(trimmed, "\\") {
			current.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		current.WriteString(trimmed)
		cmd, args, _ := strings.Cut(current.String(), " ")
		out = append(out, instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
		current.Reset()
	}
	return out
}

func checkDockerfile(args []string, p *problems) error {
	opts, _, err := flags(args, "context", "file")
	if err != nil {
		return err
	}
	ctxDir := opts["context"]
	file := opts["file"]
	if file == "" {
		file = "Dockerfile"
	}
	text, err := os.ReadFile(filepath.Join(ctxDir, file))
	if err != nil {
		return err
	}
	var ignore *patternmatcher.PatternMatcher
	if raw, err := os.ReadFile(filepath.Join(ctxDir, ".dockerignore")); err == nil {
		var patterns []string
		for _, line := range strings.Split(string(raw), "\n") {
			if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
				patterns = append(patterns, l)
			}
		}
		if ignore, err = patternmatcher.New(patterns); err != nil {
			return err
		}
	}
	where := func(in instruction) string { return fmt.Sprintf("%s:%d", file, in.line) }
	stages := 0
	var last []instruction // the final stage's instructions
	user, healthcheck, entrypoint := "", false, false
	for _, in := range parseDockerfile(string(text)) {
		switch in.cmd {
		case "FROM":
			stages++
			last = nil
			user, healthcheck, entrypoint = "", false, false
		case "USER":
			user = in.args
		case "HEALTHCHECK":
			healthcheck = true
			if !strings.Contains(in.args, "/healthz") {
				p.add(where(in), "HEALTHCHECK does not ask the worker's /healthz")
			}
		case "ENTRYPOINT":
			entrypoint = true
		case "COPY", "ADD":
			fields := strings.Fields(in.args)
			fromStage := false
			var paths []string
			for _, f := range fields {
				if strings.HasPrefix(f, "--from=") {
					fromStage = true
				} else if !strings.HasPrefix(f, "--") {
					paths = append(paths, f)
				}
			}
			if fromStage || len(paths) < 2 {
				break
			}
			for _, src := range paths[:len(paths)-1] {
				matches, _ := filepath.Glob(filepath.Join(ctxDir, src))
				if len(matches) == 0 {
					p.add(where(in), "%s source %s does not exist in the build context", in.cmd, src)
					continue
				}
				if ignore != nil {
					if excluded, _ := ignore.MatchesOrParentMatches(filepath.Clean(src)); excluded {
						p.add(where(in), "%s source %s is excluded by .dockerignore", in.cmd, src)
					}
				}
			}
		}
		last = append(last, in)
	}
	if stages < 2 {
		p.add(file, "not multi-stage: build in one stage, run from another")
	}
	if user == "" || user == "root" || user == "0" || strings.HasPrefix(user, "0:") {
		p.add(file, "the final stage runs as root: add USER with a non-root user")
	}
	if !healthcheck {
		p.add(file, "the final stage has no HEALTHCHECK")
	}
	if !entrypoint {
		p.add(file, "the final stage has no ENTRYPOINT")
	}
	// No build toolchain in the final image: no compiler packages, no npm install/build there.
	toolchain := regexp.MustCompile(`\b(build-essential|gcc|g\+\+|make|python3-dev|node-gyp)\b|\bnpm (ci|install|run)\b`)
	for _, in := range last {
		if in.cmd == "RUN" && toolchain.MatchString(in.args) {
			p.add(where(in), "the final stage installs or runs a build toolchain: %s", toolchain.FindString(in.args))
		}
	}
	return nil
}

// ---- Kubernetes schemas ------------------------------------------------------------------------

// buildK8sSchemas writes kubeconform's schema folder: the Kubernetes JSON schemas that the
// kubernetes-validate package ships (without their $id, and their "/api/_definitions.json" references made relative),
// plus one strict schema per version of each given CustomResourceDefinition, named as
// kubeconform looks them up: {kind}-{group's first label}-{version}.json.
func buildK8sSchemas(args []string) error {
	opts, crds, err := flags(args, "from", "out")
	if err != nil {
		return err
	}
	from, out := opts["from"], opts["out"]
	if from == "" || out == "" {
		return fmt.Errorf("--from and --out are required")
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	count := 0
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			return err
		}
		// Their $id (https://kubernetes.io/api/...) would send the references to the network.
		var schema map[string]any
		if err := json.Unmarshal(raw, &schema); err != nil {
			return fmt.Errorf("%s: %w", e.Name(), err)
		}
		delete(schema, "$id")
		body, err := json.Marshal(schema)
		if err != nil {
			return err
		}
		fixed := strings.ReplaceAll(string(body), `"/api/_definitions.json#`, `"_definitions.json#`)
		if err := os.WriteFile(filepath.Join(out, e.Name()), []byte(fixed), 0o644); err != nil {
			return err
		}
		count++
	}
	for _, crdPath := range crds {
		raw, err := os.ReadFile(crdPath)
		if err != nil {
			return err
		}
		var crd struct {
			Spec struct {
				Group string `json:"group"`
				Names struct {
					Kind string `json:"kind"`
				} `json:"names"`
				Versions []struct {
					Name   string `json:"name"`
					Schema struct {
						OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
					} `json:"schema"`
				} `json:"versions"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal(raw, &crd); err != nil {
			return fmt.Errorf("%s: %w", crdPath, err)
		}
		group := strings.Split(crd.Spec.Group, ".")[0]
		for _, v := range crd.Spec.Versions {
			schema := strictSchema(v.Schema.OpenAPIV3Schema)
			schema["$schema"] = "http://json-schema.org/draft-07/schema#"
			body, err := json.MarshalIndent(schema, "", "  ")
			if err != nil {
				return err
			}
			name := fmt.Sprintf("%s-%s-%s.json", strings.ToLower(crd.Spec.Names.Kind), group, v.Name)
			if err := os.WriteFile(filepath.Join(out, name), body, 0o644); err != nil {
				return err
			}
			count++
		}
	}
	fmt.Printf("deploy-check k8s-schemas: %d schemas in %s\n", count, out)
	return nil
}

// strictSchema turns an OpenAPI v3 structural schema into JSON schema the way kubeconform's
// openapi2jsonschema does in strict mode: objects with properties accept no other properties
// (unless x-kubernetes-preserve-unknown-fields), int-or-string accepts both.
func strictSchema(node map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range node {
		switch k {
		case "properties":
			props := map[string]any{}
			for name, child := range v.(map[string]any) {
				props[name] = strictSchema(child.(map[string]any))
			}
			out[k] = props
		case "items":
			if child, ok := v.(map[string]any); ok {
				out[k] = strictSchema(child)
			} else {
				out[k] = v
			}
		case "additionalProperties":
			if child, ok := v.(map[string]any); ok {
				out[k] = strictSchema(child)
			} else {
				out[k] = v
			}
		case "allOf", "anyOf", "oneOf":
			var list []any
			for _, child := range v.([]any) {
				list = append(list, strictSchema(child.(map[string]any)))
			}
			out[k] = list
		case "x-kubernetes-int-or-string":
			if v == true {
				out["type"] = []any{"integer", "string"}
			}
		default:
			if !strings.HasPrefix(k, "x-kubernetes-") {
				out[k] = v
			}
		}
	}
	if _, has := out["properties"]; has && node["x-kubernetes-preserve-unknown-fields"] != true {
		if _, set := out["additionalProperties"]; !set {
			out["additionalProperties"] = false
		}
	}
	if t, ok := out["type"].(string); ok && node["nullable"] == true {
		out["type"] = []any{t, "null"}
	}
	return out
}

// ---- PrometheusRule ----------------------------------------------------------------------------

// checkPrometheusRule: the PrometheusRule's spec.groups are exactly the alert rules file's groups,
// and the spec is written to --out for `promtool check rules`.
func checkPrometheusRule(args []string, p *problems) error {
	opts, _, err := flags(args, "rule", "alerts", "out")
	if err != nil {
		return err
	}
	rawRule, err := os.ReadFile(opts["rule"])
	if err != nil {
		return err
	}
	rawAlerts, err := os.ReadFile(opts["alerts"])
	if err != nil {
		return err
	}
	var rule struct {
		Kind string         `json:"kind"`
		Spec map[string]any `json:"spec"`
	}
	if err := yaml.Unmarshal(rawRule, &rule); err != nil {
		return err
	}
	var alerts map[string]any
	if err := yaml.Unmarshal(rawAlerts, &alerts); err != nil {
		return err
	}
	if rule.Kind != "PrometheusRule" {
		p.add(opts["rule"], "kind is %q, expected PrometheusRule", rule.Kind)
	}
	if !reflect.DeepEqual(rule.Spec["groups"], alerts["groups"]) {
		p.add(opts["rule"], "spec.groups differ from %s: regenerate the PrometheusRule from it", opts["alerts"])
	}
	body, err := yaml.Marshal(rule.Spec)
	if err != nil {
		return err
	}
	return os.WriteFile(opts["out"], body, 0o644)
}
