#[derive(filechannel::Message)]
#[message(verison = 2)]
struct A;

fn main() {}
