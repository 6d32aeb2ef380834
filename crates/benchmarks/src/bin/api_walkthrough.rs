//! `api_walkthrough`: the client API step by step, as rFaaS's `cpp_interface` example shows
//! it: a blocking call, an asynchronous call, both mixed, and two asynchronous calls in flight
//! on two buffers. Each step checks its result when the function is `empty` (an echo).

use std::process::ExitCode;

use anyhow::{Result, ensure};
use benchmarks::setup::{Client, ClientArgs};
use clap::Parser;
use rfaas::{Executor, FunctionId, InputBuffer, OutputBuffer};

/// Walks through blocking, asynchronous and mixed invocations.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    client: ClientArgs,
    /// Function to invoke.
    #[arg(long, default_value = "empty")]
    name: String,
    /// Payload size in bytes.
    #[arg(short = 's', long = "size", default_value_t = 64)]
    size: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    rfaas_cli::run("api_walkthrough", args.client.verbose, || run(&args))
}

struct Step<'a> {
    executor: &'a Executor,
    function: FunctionId,
    size: usize,
    echo: bool,
}

impl Step<'_> {
    fn buffers(&self, fill: u8) -> Result<(InputBuffer, OutputBuffer)> {
        let input = self.executor.input_buffer(self.size)?;
        input.write(&vec![fill; self.size])?;
        let output = self.executor.output_buffer(self.size)?;
        output.fill(0)?;
        Ok((input, output))
    }

    fn check(&self, what: &str, output: &OutputBuffer, len: u32, fill: u8) -> Result<()> {
        if self.echo {
            ensure!(
                len as usize == self.size,
                "{what}: {len} bytes back, expected {}",
                self.size
            );
            ensure!(
                output.to_vec(self.size)?.iter().all(|b| *b == fill),
                "{what}: the result differs from the input"
            );
        }
        println!(
            "{what}: {len} bytes back{}",
            if self.echo {
                ", equal to the input"
            } else {
                ""
            }
        );
        Ok(())
    }
}

fn run(args: &Args) -> Result<()> {
    let client = Client::load(&args.client)?;
    // Two input slots per thread, so an asynchronous call and a blocking one can be in flight together.
    let executor = client.allocate(args.size as u32, 2)?;
    let step = Step {
        executor: &executor,
        function: executor.function(&args.name)?,
        size: args.size,
        echo: args.name == "empty",
    };

    let (input, output) = step.buffers(1)?;
    let len = executor.execute(step.function, &input, args.size, &output)?;
    step.check("blocking", &output, len, 1)?;

    let (input, output) = step.buffers(2)?;
    let call = executor.submit(0, step.function, &input, args.size, &output)?;
    let len = call.wait()?;
    step.check("async", &output, len, 2)?;

    let (async_in, async_out) = step.buffers(3)?;
    let (block_in, block_out) = step.buffers(4)?;
    let call = executor.submit(0, step.function, &async_in, args.size, &async_out)?;
    let len = executor.execute(step.function, &block_in, args.size, &block_out)?;
    step.check("mixed: blocking", &block_out, len, 4)?;
    let len = call.wait()?;
    step.check("mixed: async", &async_out, len, 3)?;

    let (in_a, out_a) = step.buffers(5)?;
    let (in_b, out_b) = step.buffers(6)?;
    let a = executor.submit(0, step.function, &in_a, args.size, &out_a)?;
    let b = executor.submit(0, step.function, &in_b, args.size, &out_b)?;
    let (len_a, len_b) = (a.wait()?, b.wait()?);
    step.check("async on two buffers: first", &out_a, len_a, 5)?;
    step.check("async on two buffers: second", &out_b, len_b, 6)?;

    executor.deallocate();
    Ok(())
}
