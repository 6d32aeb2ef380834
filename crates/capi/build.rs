//! librfaas.so names itself, so programs linked against it by path (as CMake does) still
//! record just `librfaas.so` and find it wherever the library is installed.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,librfaas.so");
}
