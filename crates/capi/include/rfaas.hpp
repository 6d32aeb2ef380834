// rfaas.hpp: the C++17 layer over librfaas (rfaas.h). Header-only; link with librfaas.
//
// Every handle of the C API is an RAII type here (move-only, freed in its destructor), every
// failure is an rfaas::error carrying the library's message and status, and asynchronous calls
// are rfaas::invocation (poll / wait) or std::future.
//
//   rfaas::endpoint endpoint("devices.json");
//   auto lease = rfaas::lease::from_database("executors_database.json", 1, 256);
//   auto executor = rfaas::executor::allocate(endpoint, lease, rfaas::read_file("libfunctions.so"));
//   auto empty = executor.function("empty");
//   auto in = executor.alloc_input(64);
//   auto out = executor.alloc_output(64);
//   in.write("hello", 5);
//   std::future<uint32_t> len = executor.async(empty, in, 5, out);
//   std::string result(reinterpret_cast<const char*>(out.data()), len.get());
#ifndef RFAAS_HPP
#define RFAAS_HPP

#include <rfaas.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <future>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace rfaas {

// A failed call: what() is librfaas's message, status() its code, return_code() the
// executor's code for RFAAS_ERROR_INVOCATION.
class error : public std::runtime_error {
 public:
  error(rfaas_status status, const std::string& message, uint16_t return_code = 0)
      : std::runtime_error(message), status_(status), return_code_(return_code) {}
  rfaas_status status() const noexcept { return status_; }
  uint16_t return_code() const noexcept { return return_code_; }
  // Whether the same request may succeed later unchanged (busy, no resources right now).
  bool is_transient() const noexcept {
    return status_ == RFAAS_ERROR_BUSY || status_ == RFAAS_ERROR_NO_RESOURCES;
  }

 private:
  rfaas_status status_;
  uint16_t return_code_;
};

// Throws the library's last failure unless `status` is RFAAS_OK.
inline void check(rfaas_status status) {
  if (status != RFAAS_OK) {
    throw error(status, rfaas_last_error(), rfaas_last_return_code());
  }
}

// Throws unless the loaded librfaas has the ABI this header was written for.
inline void check_abi() {
  if (rfaas_abi_version() != RFAAS_ABI_VERSION) {
    throw error(RFAAS_ERROR_INVALID_ARGUMENT,
                "librfaas has ABI version " + std::to_string(rfaas_abi_version()) +
                    ", rfaas.hpp expects " + std::to_string(RFAAS_ABI_VERSION));
  }
}

// The bytes of a file (a function library, a payload).
inline std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    throw error(RFAAS_ERROR_INVALID_ARGUMENT, "cannot read " + path);
  }
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(file), {});
}

namespace detail {
template <class T, void (*Free)(T*)>
struct deleter {
  void operator()(T* p) const noexcept { Free(p); }
};
template <class T, void (*Free)(T*)>
using handle = std::unique_ptr<T, deleter<T, Free>>;

inline uint32_t millis(std::chrono::milliseconds d) {
  return d.count() <= 0 ? 0 : d.count() >= UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(d.count());
}
}  // namespace detail

// This process's device (from a device database), shared by leases and allocations.
class endpoint {
 public:
  // Opens `device` of `device_database`; "" picks the first device.
  explicit endpoint(const std::string& device_database, const std::string& device = "") {
    rfaas_endpoint* p = nullptr;
    check(rfaas_endpoint_open(device_database.c_str(), device.c_str(), &p));
    handle_.reset(p);
  }
  const rfaas_endpoint* get() const noexcept { return handle_.get(); }

 private:
  detail::handle<rfaas_endpoint, rfaas_endpoint_free> handle_;
};

// Where to allocate: an executor manager and the cores and memory granted.
class lease {
 public:
  // The first server of an executors database with `cores` cores and `memory_mb` MiB.
  static lease from_database(const std::string& executors_database, uint16_t cores,
                             uint32_t memory_mb) {
    rfaas_lease* p = nullptr;
    check(rfaas_lease_from_database(executors_database.c_str(), cores, memory_mb, &p));
    return lease(p);
  }
  // A lease from the resource manager at `address` ("host:port").
  static lease from_resource_manager(const endpoint& via, const std::string& address,
                                     uint16_t cores, uint32_t memory_mb,
                                     std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    rfaas_lease* p = nullptr;
    check(rfaas_lease_from_resource_manager(via.get(), address.c_str(), cores, memory_mb,
                                            detail::millis(timeout), &p));
    return lease(p);
  }
  const rfaas_lease* get() const noexcept { return handle_.get(); }

 private:
  explicit lease(rfaas_lease* p) : handle_(p) {}
  detail::handle<rfaas_lease, rfaas_lease_free> handle_;
};

// What to allocate: the C struct with its defaults filled in.
struct allocation_spec : rfaas_allocation_spec {
  allocation_spec() noexcept : rfaas_allocation_spec() { rfaas_allocation_spec_init(this); }
};

// Registered memory a call reads its payload from; fill data() in place or write().
class input_buffer {
 public:
  uint8_t* data() noexcept { return rfaas_input_buffer_data(handle_.get()); }
  size_t capacity() const noexcept { return rfaas_input_buffer_capacity(handle_.get()); }
  void write(const void* bytes, size_t len) {
    if (len > capacity()) {
      throw error(RFAAS_ERROR_INVALID_ARGUMENT, std::to_string(len) +
                                                    " bytes do not fit an input buffer of " +
                                                    std::to_string(capacity()) + " bytes");
    }
    std::memcpy(data(), bytes, len);
  }
  const rfaas_input_buffer* get() const noexcept { return handle_.get(); }

 private:
  friend class executor;
  explicit input_buffer(rfaas_input_buffer* p) : handle_(p) {}
  detail::handle<rfaas_input_buffer, rfaas_input_buffer_free> handle_;
};

// Registered memory the executor writes a result into; read data() once the call returned.
class output_buffer {
 public:
  const uint8_t* data() const noexcept { return rfaas_output_buffer_data(handle_.get()); }
  size_t capacity() const noexcept { return rfaas_output_buffer_capacity(handle_.get()); }
  std::vector<uint8_t> to_vector(size_t len) const {
    return std::vector<uint8_t>(data(), data() + std::min(len, capacity()));
  }
  const rfaas_output_buffer* get() const noexcept { return handle_.get(); }

 private:
  friend class executor;
  explicit output_buffer(rfaas_output_buffer* p) : handle_(p) {}
  detail::handle<rfaas_output_buffer, rfaas_output_buffer_free> handle_;
};

// An asynchronous call in flight. wait() takes its result; destroying it unwaited gives the
// call up. Its buffers must outlive it.
class invocation {
 public:
  bool done() const {
    bool done = false;
    check(rfaas_invocation_is_done(handle_.get(), &done));
    return done;
  }
  // The result's length, waiting at most the allocation's call timeout. Consumes the call.
  uint32_t wait() {
    uint32_t len = 0;
    check(rfaas_invocation_wait(take(), &len));
    return len;
  }
  // Like wait(), at most `timeout`.
  uint32_t wait_for(std::chrono::milliseconds timeout) {
    uint32_t len = 0;
    check(rfaas_invocation_wait_within(take(), detail::millis(timeout), &len));
    return len;
  }

 private:
  friend class executor;
  explicit invocation(rfaas_invocation* p) : handle_(p) {}
  rfaas_invocation* take() {
    if (!handle_) {
      throw error(RFAAS_ERROR_INVALID_ARGUMENT, "this invocation was already waited for");
    }
    return handle_.release();
  }
  detail::handle<rfaas_invocation, rfaas_invocation_free> handle_;
};

// An allocated executor; the destructor deallocates it.
class executor {
 public:
  static executor allocate(const endpoint& via, const lease& on, const std::vector<uint8_t>& code,
                           const allocation_spec& spec = allocation_spec()) {
    rfaas_executor* p = nullptr;
    check(rfaas_allocate(via.get(), on.get(), code.data(), code.size(), &spec, &p));
    return executor(p);
  }

  uint32_t cores() const noexcept { return rfaas_executor_cores(handle_.get()); }

  rfaas_function function(const std::string& name) const {
    rfaas_function f = 0;
    check(rfaas_executor_function(handle_.get(), name.c_str(), &f));
    return f;
  }

  input_buffer alloc_input(size_t capacity) const {
    rfaas_input_buffer* p = nullptr;
    check(rfaas_input_buffer_new(handle_.get(), capacity, &p));
    return input_buffer(p);
  }

  output_buffer alloc_output(size_t capacity) const {
    rfaas_output_buffer* p = nullptr;
    check(rfaas_output_buffer_new(handle_.get(), capacity, &p));
    return output_buffer(p);
  }

  // Runs `f` on the first `size` bytes of `in` on executor thread `thread`; the result's length.
  uint32_t execute(rfaas_function f, const input_buffer& in, size_t size, const output_buffer& out,
                   uint32_t thread = 0) const {
    uint32_t len = 0;
    check(rfaas_execute(handle_.get(), thread, f, in.get(), size, out.get(), &len));
    return len;
  }

  // Like execute(), waiting at most `timeout`.
  uint32_t execute_for(rfaas_function f, const input_buffer& in, size_t size,
                       const output_buffer& out, std::chrono::milliseconds timeout,
                       uint32_t thread = 0) const {
    uint32_t len = 0;
    check(rfaas_execute_within(handle_.get(), thread, f, in.get(), size, out.get(),
                               detail::millis(timeout), &len));
    return len;
  }

  // Starts a call and returns at once.
  invocation submit(rfaas_function f, const input_buffer& in, size_t size,
                    const output_buffer& out, uint32_t thread = 0) const {
    rfaas_invocation* p = nullptr;
    check(rfaas_submit(handle_.get(), thread, f, in.get(), size, out.get(), &p));
    return invocation(p);
  }

  // Starts a call; the future holds the result's length (or the rfaas::error). A thread of
  // std::async waits for it, so the future is ready on its own; submit() is cheaper.
  std::future<uint32_t> async(rfaas_function f, const input_buffer& in, size_t size,
                              const output_buffer& out, uint32_t thread = 0) const {
    return std::async(std::launch::async,
                      [call = submit(f, in, size, out, thread)]() mutable { return call.wait(); });
  }

 private:
  explicit executor(rfaas_executor* p) : handle_(p) {}
  detail::handle<rfaas_executor, rfaas_deallocate> handle_;
};

}  // namespace rfaas

#endif  // RFAAS_HPP
