#[derive(filechannel::Message)]
#[message(version = 1, version = 2)]
struct A;

fn main() {}
