// Command tryitout does what a person does on a running API's /api-docs page, in headless
// Chromium driven over the DevTools protocol: it authorizes with a tenant key, opens
// GET /api/v1/me, presses "Try it out" and "Execute", and reads the answer Swagger UI shows.
// It exits 0 when that answer is 200 with the tenant's envId. scripts/check-api-docs.sh runs
// it when CONVERGENCE_API_KEY is set:
//
//	go run ./scripts/tryitout -url http://127.0.0.1:3000 -key sk_tenant_...
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/coder/websocket"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:3000", "the API")
	key := flag.String("key", os.Getenv("CONVERGENCE_API_KEY"), "a tenant key")
	browser := flag.String("browser", "chromium", "the Chromium to run")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	answer, err := run(ctx, *browser, *url, *key)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tryitout:", err)
		os.Exit(1)
	}
	fmt.Println("tryitout: Swagger UI's Try it out on GET /api/v1/me answered", answer)
}

// script is run in the page: it waits for Swagger UI, authorizes with the key, and executes
// GET /api/v1/me as its buttons do, answering the status and body the page then shows.
const script = `(async (key) => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const until = async (f, what) => {
    for (let i = 0; i < 200; i++) { const v = f(); if (v) return v; await sleep(100); }
    throw new Error("timed out waiting for " + what);
  };
  await until(() => window.ui && document.querySelector('[data-path="/api/v1/me"]'), "the operation list");
  window.ui.authActions.authorize({ tenantKey: { name: "tenantKey", schema: { type: "http", scheme: "bearer" }, value: key } });
  const block = [...document.querySelectorAll(".opblock")].find((b) => b.querySelector('[data-path="/api/v1/me"]'));
  (block.querySelector(".opblock-summary-control") || block.querySelector(".opblock-summary")).click();
  (await until(() => block.querySelector(".try-out__btn"), "Try it out")).click();
  (await until(() => block.querySelector(".execute"), "Execute")).click();
  // The table's first status cell is its header ("Code"); the answer's is in its body.
  const status = await until(() => block.querySelector(".live-responses-table tbody .response-col_status"), "the answer");
  const body = await until(() => block.querySelector(".live-responses-table .microlight, .live-responses-table pre"), "its body");
  return status.textContent.trim().split(/\s/)[0] + " " + body.textContent;
})`

func run(ctx context.Context, browser, url, key string) (string, error) {
	if key == "" {
		return "", errors.New("a tenant key is needed: -key or CONVERGENCE_API_KEY")
	}
	profile, err := os.MkdirTemp("", "tryitout-")
	if err != nil {
		return "", err
	}
	defer func() { _ = os.RemoveAll(profile) }()
	cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
		"--user-data-dir="+profile, "about:blank")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start %s: %w", browser, err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	endpoint := ""
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if _, ws, ok := strings.Cut(sc.Text(), "DevTools listening on "); ok {
			endpoint = ws
			break
		}
	}
	if endpoint == "" {
		return "", errors.New("chromium did not say where its DevTools listen")
	}
	go func() { // Keep reading, so the browser never blocks on a full pipe.
		for sc.Scan() {
		}
	}()

	conn, _, err := websocket.Dial(ctx, endpoint, nil)
	if err != nil {
		return "", fmt.Errorf("connect to DevTools: %w", err)
	}
	defer func() { _ = conn.CloseNow() }()
	conn.SetReadLimit(16 << 20)
	c := &cdp{conn: conn}
	var target struct{ TargetID string }
	if err := c.call(ctx, "", "Target.createTarget", map[string]any{"url": url + "/api-docs"}, &target); err != nil {
		return "", err
	}
	var attached struct{ SessionID string }
	if err := c.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached); err != nil {
		return "", err
	}
	arg, _ := json.Marshal(key)
	var result struct {
		Result struct {
			Value any
		}
		ExceptionDetails *struct {
			Exception struct{ Description string }
		}
	}
	// The page may still be navigating from about:blank: the evaluation is tried again when the
	// context it ran in went away.
	for attempt := 0; ; attempt++ {
		err = c.call(ctx, attached.SessionID, "Runtime.evaluate", map[string]any{
			"expression": script + "(" + string(arg) + ")", "awaitPromise": true, "returnByValue": true}, &result)
		if err == nil || attempt == 20 || !strings.Contains(err.Error(), "context") {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		return "", err
	}
	if result.ExceptionDetails != nil {
		return "", fmt.Errorf("in the page: %s", result.ExceptionDetails.Exception.Description)
	}
	value, ok := result.Result.Value.(string)
	if !ok {
		return "", fmt.Errorf("in the page: %v", result.Result.Value)
	}
	status, body, _ := strings.Cut(value, " ")
	var me struct{ EnvID int64 }
	if status != "200" || json.Unmarshal([]byte(body), &me) != nil || me.EnvID == 0 {
		return "", fmt.Errorf("the page's Try it out answered %s %.300s, not 200 with the tenant", status, body)
	}
	return fmt.Sprintf("%s (envId %d)", status, me.EnvID), nil
}

// cdp makes DevTools protocol calls on one connection, one at a time.
type cdp struct {
	conn *websocket.Conn
	id   int
}

func (c *cdp) call(ctx context.Context, session, method string, params, out any) error {
	c.id++
	msg := map[string]any{"id": c.id, "method": method, "params": params}
	if session != "" {
		msg["sessionId"] = session
	}
	b, _ := json.Marshal(msg)
	if err := c.conn.Write(ctx, websocket.MessageText, b); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	for {
		_, data, err := c.conn.Read(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", method, err)
		}
		var ans struct {
			ID     int
			Result json.RawMessage
			Error  *struct{ Message string }
		}
		if json.Unmarshal(data, &ans) != nil || ans.ID != c.id {
			continue // An event, or another call's answer.
		}
		if ans.Error != nil {
			return fmt.Errorf("%s: %s", method, ans.Error.Message)
		}
		return json.Unmarshal(ans.Result, out)
	}
}
