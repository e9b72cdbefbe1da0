"""Go source of the helper that renders Ollama TEMPLATEs with Go's own text/template engine.

Built once with the Go toolchain (Debian golang-go) into the user cache. It follows Ollama's rules
for a chat request: consecutive messages of one role are joined with a blank line; a template that
uses .Messages gets System/Messages/Tools at once; an older template (.System/.Prompt/.Response) is
run once per turn and, for the final turn, everything after .Response is cut so the prompt ends
where the model's answer starts.

Input on stdin: a JSON list of {"template": str, "messages": [{"role","content"}]}.
Output: a JSON list of {"text": str} or {"error": str}.
"""

GO_SOURCE = r'''
package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
)

type Message struct {
	Role      string   `json:"role"`
	Content   string   `json:"content"`
	Thinking  string   `json:"thinking"`
	ToolName  string   `json:"tool_name"`
	Images    []string `json:"images"`
	ToolCalls []any    `json:"tool_calls"`
}

type Job struct {
	Template string    `json:"template"`
	Messages []Message `json:"messages"`
}

type Result struct {
	Text  *string `json:"text,omitempty"`
	Error string  `json:"error,omitempty"`
}

var funcs = template.FuncMap{
	"json": func(v any) string { b, _ := json.Marshal(v); return string(b) },
	"currentDate": func(args ...string) string { return time.Now().Format("2006-01-02") },
	"yesterdayDate": func(args ...string) string { return time.Now().AddDate(0, 0, -1).Format("2006-01-02") },
	"toTypeScriptType": func(v any) string { return "any" },
}

func parseTemplate(s string) (*template.Template, error) {
	return template.New("").Option("missingkey=zero").Funcs(funcs).Parse(s)
}

// usesField reports whether any field chain in the tree starts with name.
func usesField(n parse.Node, name string) bool {
	found := false
	var walk func(parse.Node)
	walk = func(n parse.Node) {
		if n == nil || found {
			return
		}
		switch t := n.(type) {
		case *parse.ListNode:
			if t == nil {
				return
			}
			for _, c := range t.Nodes {
				walk(c)
			}
		case *parse.ActionNode:
			walk(t.Pipe)
		case *parse.PipeNode:
			if t == nil {
				return
			}
			for _, c := range t.Cmds {
				walk(c)
			}
		case *parse.CommandNode:
			for _, a := range t.Args {
				walk(a)
			}
		case *parse.FieldNode:
			if len(t.Ident) > 0 && t.Ident[0] == name {
				found = true
			}
		case *parse.IfNode:
			walk(t.Pipe); walk(t.List); walk(t.ElseList)
		case *parse.RangeNode:
			walk(t.Pipe); walk(t.List); walk(t.ElseList)
		case *parse.WithNode:
			walk(t.Pipe); walk(t.List); walk(t.ElseList)
		case *parse.TemplateNode:
			walk(t.Pipe)
		}
	}
	walk(n)
	return found
}

// cutAfterResponse drops every node that follows the first .Response field (tree order).
func cutAfterResponse(n parse.Node) parse.Node {
	cut := false
	var walk func(n parse.Node) parse.Node
	walk = func(n parse.Node) parse.Node {
		if cut {
			return nil
		}
		switch t := n.(type) {
		case *parse.ListNode:
			if t == nil {
				return t
			}
			var kept []parse.Node
			for _, c := range t.Nodes {
				if r := walk(c); r != nil {
					kept = append(kept, r)
				}
			}
			t.Nodes = kept
			return t
		case *parse.IfNode:
			walkBranch(&t.BranchNode, walk)
		case *parse.RangeNode:
			walkBranch(&t.BranchNode, walk)
		case *parse.WithNode:
			walkBranch(&t.BranchNode, walk)
		case *parse.ActionNode:
			if usesField(t, "Response") {
				cut = true
				return t
			}
		}
		return n
	}
	return walk(n)
}

func walkBranch(b *parse.BranchNode, walk func(parse.Node) parse.Node) {
	// as in Ollama, a branch's condition is not looked at, only its lists
	if b.List != nil {
		b.List = walk(b.List).(*parse.ListNode)
	}
	if b.ElseList != nil {
		if r := walk(b.ElseList); r != nil {
			b.ElseList = r.(*parse.ListNode)
		}
	}
}

func collate(msgs []Message) (string, []Message) {
	var system []string
	var out []Message
	for _, m := range msgs {
		if m.Role == "system" {
			system = append(system, m.Content)
		}
		if len(out) > 0 && out[len(out)-1].Role == m.Role {
			out[len(out)-1].Content += "\n\n" + m.Content
		} else {
			out = append(out, m)
		}
	}
	return strings.Join(system, "\n\n"), out
}

func render(job Job) (string, error) {
	tmpl, err := parseTemplate(job.Template)
	if err != nil {
		return "", err
	}
	system, msgs := collate(job.Messages)
	var b bytes.Buffer
	if usesField(tmpl.Tree.Root, "Messages") {
		if msgs == nil {
			msgs = []Message{}
		}
		err := tmpl.Execute(&b, map[string]any{"System": system, "Messages": msgs, "Tools": []any{},
			"Response": "", "Think": false, "ThinkLevel": "", "IsThinkSet": false})
		return b.String(), err
	}
	system = ""
	prompt, response := "", ""
	flush := func() error {
		err := tmpl.Execute(&b, map[string]any{"System": system, "Prompt": prompt, "Response": response})
		system, prompt, response = "", "", ""
		return err
	}
	for _, m := range msgs {
		switch m.Role {
		case "system":
			if prompt != "" || response != "" {
				if err := flush(); err != nil {
					return "", err
				}
			}
			system = m.Content
		case "user":
			if response != "" {
				if err := flush(); err != nil {
					return "", err
				}
			}
			prompt = m.Content
		case "assistant":
			response = m.Content
		}
	}
	last, err := parseTemplate(job.Template)
	if err != nil {
		return "", err
	}
	root := cutAfterResponse(last.Tree.Root).(*parse.ListNode)
	last.Tree.Root = root
	err = last.Execute(&b, map[string]any{"System": system, "Prompt": prompt, "Response": ""})
	return b.String(), err
}

func main() {
	var jobs []Job
	if err := json.NewDecoder(os.Stdin).Decode(&jobs); err != nil {
		os.Stderr.WriteString("bad input: " + err.Error() + "\n")
		os.Exit(2)
	}
	results := make([]Result, len(jobs))
	for i, job := range jobs {
		text, err := render(job)
		if err != nil {
			results[i].Error = err.Error()
		} else {
			t := text
			results[i].Text = &t
		}
	}
	json.NewEncoder(os.Stdout).Encode(results)
}
'''
