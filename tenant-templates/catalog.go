package tenanttemplates

import (
	"fmt"
	"slices"
	"strings"
)

// Template is a tenant app the platform runs when a spawn names a language (and optionally a
// framework) instead of an image.
type Template struct {
	Language  string `json:"language"`
	Framework string `json:"framework"`
	// Image is the local image the template runs as; `make images` builds it.
	Image string `json:"image"`
}

// templates is the catalog, the default first. It is a function's result rather than a
// package variable so that no caller can change it.
func templates() []Template {
	return []Template{
		{Language: "go", Framework: "net-http", Image: GoImage},
		{Language: "node", Framework: "express", Image: NodeImage},
		{Language: "python", Framework: "flask", Image: PythonImage},
	}
}

// Templates returns every known template, the default first.
func Templates() []Template { return templates() }

// DefaultTemplate is what a spawn that names neither a language nor an image runs.
func DefaultTemplate() Template { return templates()[0] }

// LookupTemplate returns the template for language and framework. An empty framework means
// the language's first (default) framework. The error says which values are valid.
func LookupTemplate(language, framework string) (Template, error) {
	var langs []string
	var frameworks []string
	for _, t := range templates() {
		if !slices.Contains(langs, t.Language) {
			langs = append(langs, t.Language)
		}
		if t.Language != language {
			continue
		}
		if framework == "" || framework == t.Framework {
			return t, nil
		}
		frameworks = append(frameworks, t.Framework)
	}
	if len(frameworks) == 0 {
		return Template{}, fmt.Errorf("language %q is not a known template; use one of: %s (or name a local image)",
			language, strings.Join(langs, ", "))
	}
	return Template{}, fmt.Errorf("framework %q is not a known template for %s; use one of: %s (or omit it for %s)",
		framework, language, strings.Join(frameworks, ", "), frameworks[0])
}
