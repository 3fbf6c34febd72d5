package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/convergence-dev/convergence/pkg/client"
)

// A tenant app reads its settings from the environment the provisioner gave it, and asks for
// a design with two roles. The call waits for the result.
func Example() {
	c, err := client.FromEnv()
	if err != nil {
		log.Fatal(err)
	}
	task, err := c.Design(context.Background(), "A password reset flow for a banking app",
		client.WithRoles("Security Expert", "UX Designer"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(task.Result.ConvergenceScore, task.Result.StopReason)
	fmt.Println(task.Result.Output)
}

// Long tasks run asynchronously: submit, then follow the rounds as they finish.
func ExampleClient_Stream() {
	c, err := client.FromEnv()
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	task, err := c.Converge(ctx, client.Request{Prompt: "Choose a database for an event store", Type: client.TypeDecide, Async: true})
	if err != nil {
		log.Fatal(err)
	}
	err = c.Stream(ctx, task.TaskID, func(e client.Event) error {
		switch e.Type {
		case "round":
			fmt.Printf("round %d: score %d\n", e.Round.Round, e.Round.Score.Value)
		case "result":
			fmt.Println("result:", e.Task.Result.StopReason)
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
}

// Errors are typed: a refused key is a *client.ClientError with the API's code.
func ExampleClientError() {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"success":false,"error":{"code":"unauthorized","message":"invalid API key","requestId":"4f2a"}}`)
	}))
	defer api.Close()

	c, _ := client.New(api.URL, "sk_tenant_revoked")
	_, err := c.Task(context.Background(), "t1")
	var ce *client.ClientError
	if errors.As(err, &ce) {
		fmt.Println(ce.StatusCode, ce.Code, ce.Message)
	}
	// Output: 401 unauthorized invalid API key
}
