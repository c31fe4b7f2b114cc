# berlin.h - build the tools and run the tests.
#   make run     build berlin-chat and run it on the embedded default model
#   make test    build and run every test (plain, then under ASan/UBSan, then
#                plain once more built by clang where it is installed)
CC       ?= cc
CXX      ?= c++
OPT      ?= -O2
CFLAGS   ?= $(OPT) -std=c99 -Wall -Wextra -pedantic -fopenmp
CXXFLAGS ?= $(OPT) -Wall -Wextra -pedantic -fopenmp
LDLIBS   ?= -lm
SANFLAGS  = -O1 -g -std=c99 -Wall -Wextra -pedantic -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
BERLIN_SHARED ?= ../shared
export BERLIN_SHARED

BUILD  = build
TOOLS  = $(patsubst tools/%.c,$(BUILD)/berlin-%,$(wildcard tools/*.c))
TESTS  = $(patsubst tests/%.c,$(BUILD)/%,$(wildcard tests/test_*.c)) $(BUILD)/test_golden_nosimd
STESTS = $(patsubst tests/%.c,$(BUILD)/san/%,$(wildcard tests/test_*.c))
HEADERS = berlin.h $(wildcard berlin_server.h)

.PHONY: all tools run test test-plain test-san test-clang clean bench
all: tools
tools: $(TOOLS)

$(BUILD)/berlin-%: tools/%.c $(HEADERS) tools/tool.h
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS) -I. $< -o $@ $(LDLIBS)

$(BUILD)/test_%: tests/test_%.c $(HEADERS) tests/testutil.h
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS) -I. -Itests $< -o $@ $(LDLIBS)

# The golden suite once more with the SIMD kernels compiled out.
$(BUILD)/test_golden_nosimd: tests/test_golden.c $(HEADERS) tests/testutil.h
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS) -DBL_NO_SIMD -I. -Itests $< -o $@ $(LDLIBS)

$(BUILD)/san/test_%: tests/test_%.c $(HEADERS) tests/testutil.h
	@mkdir -p $(BUILD)/san
	$(CC) $(SANFLAGS) -I. -Itests $< -o $@ $(LDLIBS)

run: $(BUILD)/berlin-chat
	./$(BUILD)/berlin-chat -m models/stories260K.gguf -p "Once upon a time" -n 200

# Each test prints "N passed, N failed"; tests/run.sh adds them up and fails on any failure.
test: tools $(TESTS) $(STESTS)
	@sh tests/run.sh $(TESTS) -- $(STESTS)
	@$(MAKE) --no-print-directory test-clang

# The plain suite built by a second compiler, in build/clang: clang's
# defaults (it fuses a*b+c into an FMA within an expression where the target
# has one) and its stack contents have shown what gcc's hid. The tests that
# run the tools run the ones in build/, hence tools first.
CLANG ?= clang
test-clang: tools
	@if command -v $(CLANG) >/dev/null 2>&1; then \
	    $(MAKE) --no-print-directory BUILD=$(BUILD)/clang CC=$(CLANG) CXX=$(CLANG)++ test-plain; \
	else echo "$(CLANG) not found: the suite built by clang is skipped"; fi

test-plain: tools $(TESTS)
	@sh tests/run.sh $(TESTS)

# test_quantize drives the quantize tool, so it is rebuilt with it.
$(BUILD)/test_quantize $(BUILD)/san/test_quantize: tools/quantize.c

# Speed is measured, not asserted: a random-weight TinyLlama-1.1B-shape model
# (performance does not depend on the weight values) and the embedded model.
bench: $(BUILD)/berlin-bench $(BUILD)/berlin-quantize
	@test -f $(BUILD)/tinyllama-1.1b-Q4_0.gguf || ./$(BUILD)/berlin-quantize --random tinyllama-1.1b \
	    --vocab $(BERLIN_SHARED)/tokenizers/gguf/ggml-vocab-llama-spm.gguf $(BUILD)/tinyllama-1.1b-Q4_0.gguf Q4_0
	./$(BUILD)/berlin-bench -m models/stories260K.gguf,$(BUILD)/tinyllama-1.1b-Q4_0.gguf -p 64 -n 16 -r 3

clean:
	rm -rf $(BUILD)
