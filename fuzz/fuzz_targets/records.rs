//! Every control record as a peer could send it: the hello of a connection request (private
//! data) and each record of the mailbox. Decoding must fail cleanly or give a record whose
//! encoding decodes to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rfaas_protocol::Record;
use rfaas_protocol::control::{
    AllocationRequest, AllocationResponse, BillRecorded, BillingRecord, ExecutorExit, Hello,
    LeaseClosed, LeaseNotice, LeaseRequest, LeaseResponse, LeasesHeld, NodeRegistration,
    ThreadReady,
};

fn round_trip<R: Record>(data: &[u8]) {
    if let Ok(record) = R::decode(data) {
        // Invalid UTF-8 in text decodes to replacement characters, so the encoding may differ
        // from the input: it must decode to itself.
        let bytes = record.encode();
        assert!(bytes.len() <= rfaas_protocol::MAX_MESSAGE_LEN);
        let again = R::decode(&bytes).expect("an encoded record decodes");
        assert_eq!(again.encode(), bytes);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Hello>(data);
    round_trip::<AllocationRequest>(data);
    round_trip::<AllocationResponse>(data);
    round_trip::<ThreadReady>(data);
    round_trip::<ExecutorExit>(data);
    round_trip::<NodeRegistration>(data);
    round_trip::<LeaseRequest>(data);
    round_trip::<LeaseResponse>(data);
    round_trip::<LeaseNotice>(data);
    round_trip::<LeaseClosed>(data);
    round_trip::<BillingRecord>(data);
    round_trip::<LeasesHeld>(data);
    round_trip::<BillRecorded>(data);
});
