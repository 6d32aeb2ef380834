// async_calls: asynchronous invocations from C++ over rfaas.hpp.
//
//   async_calls --device-database devices.json --executors-database executors_database.json
//     --functions libfunctions.so [-s SIZE] [--hot-timeout MS]
//
// Allocates one executor thread with four input slots, then: four calls of `empty` in flight
// at once as std::future, checked byte for byte; a call polled through rfaas::invocation; a
// function that fails on the executor (`oversize`) and one that does not exist, as
// rfaas::error. Works with native and wasm function libraries alike.
#include <rfaas.hpp>

#include <cstring>
#include <future>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

namespace {

struct args {
  std::string devices, executors, functions;
  size_t size = 1024;
  int hot_timeout_ms = 0;
};

args parse(int argc, char** argv) {
  args a;
  for (int i = 1; i < argc; i++) {
    std::string flag = argv[i];
    if (i + 1 >= argc) {
      throw std::invalid_argument(flag + " needs a value");
    }
    std::string value = argv[++i];
    if (flag == "--device-database") {
      a.devices = value;
    } else if (flag == "--executors-database") {
      a.executors = value;
    } else if (flag == "--functions") {
      a.functions = value;
    } else if (flag == "-s" || flag == "--size") {
      a.size = std::stoul(value);
    } else if (flag == "--hot-timeout") {
      a.hot_timeout_ms = std::stoi(value);
    } else {
      throw std::invalid_argument("unknown flag " + flag);
    }
  }
  if (a.devices.empty() || a.executors.empty() || a.functions.empty()) {
    throw std::invalid_argument(
        "usage: async_calls --device-database F --executors-database F --functions F [-s SIZE]");
  }
  return a;
}

// `size` bytes that differ per call, so a mixed-up result shows.
std::vector<uint8_t> payload(size_t size, uint8_t seed) {
  std::vector<uint8_t> v(size);
  for (size_t i = 0; i < size; i++) {
    v[i] = static_cast<uint8_t>(seed * 31 + i * 7);
  }
  return v;
}

const char* verdict(const rfaas::output_buffer& out, const std::vector<uint8_t>& expected,
                    uint32_t len) {
  return len == expected.size() && std::memcmp(out.data(), expected.data(), len) == 0
             ? "equal to the input"
             : "DIFFERENT from the input";
}

}  // namespace

int main(int argc, char** argv) try {
  const args a = parse(argc, argv);
  rfaas::check_abi();
  rfaas::endpoint endpoint(a.devices);
  auto lease = rfaas::lease::from_database(a.executors, 1, 256);
  rfaas::allocation_spec spec;
  spec.max_payload = static_cast<uint32_t>(a.size);
  spec.input_buf_count = 4;
  spec.hot_timeout_ms = a.hot_timeout_ms;
  auto executor = rfaas::executor::allocate(endpoint, lease, rfaas::read_file(a.functions), spec);
  auto empty = executor.function("empty");
  bool all_equal = true;

  // Four calls in flight on one executor thread, one per input slot.
  std::vector<rfaas::input_buffer> inputs;
  std::vector<rfaas::output_buffer> outputs;
  std::vector<std::vector<uint8_t>> expected;
  std::vector<std::future<uint32_t>> futures;
  for (uint8_t i = 0; i < 4; i++) {
    inputs.push_back(executor.alloc_input(a.size));
    outputs.push_back(executor.alloc_output(a.size));
    expected.push_back(payload(a.size, i));
    inputs.back().write(expected.back().data(), a.size);
  }
  for (size_t i = 0; i < 4; i++) {
    futures.push_back(executor.async(empty, inputs[i], a.size, outputs[i]));
  }
  for (size_t i = 0; i < 4; i++) {
    uint32_t len = futures[i].get();
    const char* v = verdict(outputs[i], expected[i], len);
    all_equal = all_equal && std::strcmp(v, "equal to the input") == 0;
    std::cout << "future " << i << ": " << len << " bytes back, " << v << "\n";
  }

  // A call polled until its result is in, while the caller could do other work.
  auto call = executor.submit(empty, inputs[0], a.size, outputs[0]);
  int polls = 0;
  while (!call.done()) {
    polls++;
    std::this_thread::yield();
  }
  uint32_t len = call.wait();
  const char* v = verdict(outputs[0], expected[0], len);
  all_equal = all_equal && std::strcmp(v, "equal to the input") == 0;
  std::cout << "polled: done after " << polls << " polls, " << len
            << " bytes back, " << v << "\n";

  // A function that returns more bytes than its output buffer holds: the executor refuses
  // to send it, and the call fails with the executor's return code.
  try {
    executor.execute(executor.function("oversize"), inputs[1], 16, outputs[1]);
    std::cout << "oversize: the call succeeded (unexpected)\n";
    all_equal = false;
  } catch (const rfaas::error& e) {
    std::cout << "oversize: " << rfaas_status_name(e.status()) << " (return code "
              << e.return_code() << "): " << e.what() << "\n";
  }
  try {
    executor.function("no_such_function");
  } catch (const rfaas::error& e) {
    std::cout << "unknown function: " << rfaas_status_name(e.status()) << ": " << e.what() << "\n";
  }
  return all_equal ? 0 : 1;
} catch (const rfaas::error& e) {
  std::cerr << "async_calls: " << e.what() << "\n";
  return 1;
} catch (const std::exception& e) {
  std::cerr << "async_calls: " << e.what() << "\n";
  return 2;
}
