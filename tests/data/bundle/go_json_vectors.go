package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
)

func main() {
	floats := []string{"0.7", "1", "1e-7", "1.5e21", "0.1", "3.14159", "1e-6", "2.5e-10", "123456789", "0.000001", "0.95", "1.1", "-0.5", "65504", "1e20", "9.99e20", "0.3333333333", "1e-45", "3.4e38"}
	out := map[string]any{}
	f32 := map[string]string{}
	f64 := map[string]string{}
	for _, s := range floats {
		v, _ := strconv.ParseFloat(s, 32)
		b, _ := json.Marshal(float32(v))
		f32[s] = string(b)
		v64, _ := strconv.ParseFloat(s, 64)
		b, _ = json.Marshal(v64)
		f64[s] = string(b)
	}
	out["f32"] = f32
	out["f64"] = f64
	strs := []string{"<|im_end|>", "a&b", "tab\there\nnl\r", "\x01\x1f\x7f", "\u2028\u2029", "é日本", "quote\"back\\slash", "GPT4 Correct User:"}
	enc := map[string]string{}
	for _, s := range strs {
		b, _ := json.Marshal(s)
		enc[s] = string(b)
	}
	out["str"] = enc
	json.NewEncoder(os.Stdout).Encode(out)
	fmt.Fprintln(os.Stderr, "ok")
}
